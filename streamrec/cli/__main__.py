"""``python -m streamrec.cli``: what the roles and the tests start."""

from streamrec.cli import main

main()
