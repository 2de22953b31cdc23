# One image for every role: `streamrec api` (default), `streamrec worker`, `streamrec simulate`.
FROM python:3.11-slim

# STREAMREC_API_HOST: the settings default (127.0.0.1) is unreachable through a published port.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMREC_API_HOST=0.0.0.0

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY streamrec/ streamrec/
COPY streams/ streams/
COPY recommender/ recommender/
COPY api/ api/
COPY schemas/ schemas/
# The constraints pin every transitive dependency, so the image gets the versions CI tested.
# Every pin has a manylinux wheel for x86_64, so no compiler is needed; on arm64 faust-streaming
# is an sdist whose setup.py falls back to pure Python when there is no C compiler.
RUN pip install --no-cache-dir -c constraints.txt .

RUN useradd --create-home --no-log-init --uid 10001 --user-group streamrec
USER streamrec
# A writable working directory outside /src: Faust creates its data dir relative to it, and the
# installed packages (not the copied sources) are the ones imported.
WORKDIR /home/streamrec

EXPOSE 8000
# As PID 1 Python ignores SIGTERM unless a handler is installed (the simulator has none);
# every role shuts down cleanly on SIGINT.
STOPSIGNAL SIGINT
CMD ["streamrec", "api"]
