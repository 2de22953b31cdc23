"""The bench's CPU readings from a /proc tree (streamrec.measure.cpu), on a built one and on
this process's own."""

import os

from streamrec.measure import bench, cpu

TICK = os.sysconf("SC_CLK_TCK")


def process(proc, pid, name, ticks, children=(), threads=(0,)):
    """A /proc/<pid> with utime, stime, cutime, cstime = ``ticks`` and its children listed
    under its threads (the first thread lists them all, the others none)."""
    fields = ["S", "1", *["0"] * 9, *map(str, ticks), *["0"] * 30]
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")
    for n, thread in enumerate(threads):
        task = proc / str(pid) / "task" / str(pid + thread)
        task.mkdir(parents=True)
        (task / "children").write_text(" ".join(map(str, children)) + " " if n == 0 else "")


def test_a_tree_sums_its_live_and_reaped_processes(tmp_path):
    # The worker (its name has a space and a parenthesis), its learning process (a thread
    # of its own spawned a grandchild) and an unrelated process.
    process(tmp_path, 100, "python (worker) x", (300, 100, 50, 50), children=(200,),
            threads=(0, 1))
    process(tmp_path, 200, "python", (2 * TICK, 0, 0, 0), children=(300,))
    process(tmp_path, 300, "python", (TICK, TICK, 0, 0))
    process(tmp_path, 400, "java", (9 * TICK, 0, 0, 0))

    alone = cpu.cpu_seconds(100, below=False, proc=tmp_path)
    assert alone == 500 / TICK  # reaped children count: they are gone from the tree
    assert cpu.cpu_seconds(100, proc=tmp_path) == 500 / TICK + 4
    assert cpu.cpu_seconds(999, proc=tmp_path) is None
    taken = cpu.snapshot({"worker main process": [100], "worker": [100], "kafka": [400],
                          "gone": [400, 999]}, alone=("worker main process",), proc=tmp_path)
    assert taken == {"worker main process": 500 / TICK, "worker": 500 / TICK + 4,
                     "kafka": 9.0}


def test_the_learning_process_is_the_worker_less_its_main_process():
    before = {"worker main process": 10.0, "worker": 14.0, "redis-server": 5.0}
    after = {"worker main process": 16.0, "worker": 23.0, "redis-server": 13.0}
    used = bench._cpu_use(before, after, events=100_000, seconds=10.0)
    assert {role: (round(row["us_per_event"], 9), round(row["cores"], 9))
            for role, row in used.items()} == {"worker main process": (60.0, 0.6),
                                               "redis-server": (80.0, 0.8),
                                               "learning process": (30.0, 0.3)}


def test_this_process_is_read_from_the_real_proc():
    spent = cpu.cpu_seconds(os.getpid())
    sum(range(3_000_000))
    assert cpu.cpu_seconds(os.getpid()) > spent
