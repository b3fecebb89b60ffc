"""Nothing qwenlayers reads runs code; its caches heal; a stopped run leaves no worker behind.

Issue 17, classes 1 and 5: the worker exchange is data only (runtime/exchange.py), the cache
is private (runtime/paths.py), cache entries are written atomically and an unreadable one is a
miss, and every exit path stops the workers a run started.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from qwenlayers.core.config import preset
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import InputError, KernelError
from qwenlayers.runtime import calibration, paths, worker
from qwenlayers.runtime.exchange import read_message, write_message
from qwenlayers.runtime.paths import CacheWarning, atomic_write_text, read_json

SENTINEL_CODE = "import pathlib; pathlib.Path({!r}).write_text('pwned')"


class _Payload:
    """Unpickling this runs code: what a swapped job file could hold."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (SENTINEL_CODE.format(str(self.sentinel)),))


# ---------------------------------------------------------------- 1. data only


def test_a_message_round_trips_tensors_descriptors_and_json(tmp_path):
    plan = TilingPlan(phase="prefill", tok_tile=64, k_chunk=128, q_out_chunk=128, kv_out_chunk=128, mlp_out_chunk=128,
                      q_head_batch=64, seq_tile=64, origin=(("tok_tile", "user"),))
    w = torch.randn(4, 8).bfloat16()
    payload = {"config": preset("tiny"), "plan": plan, "weights": {"w": w, "w_view": w[:2]}, "lens": [3, 5],
               "shape": (2, 3), "seq_lens": torch.tensor([3, 5], dtype=torch.int32), "nan": float("nan"), "none": None}
    write_message(tmp_path / "job", payload)
    back = read_message(tmp_path / "job")
    assert back["config"] == preset("tiny") and back["plan"] == plan and back["plan"].origin == plan.origin
    assert torch.equal(back["weights"]["w"], w) and torch.equal(back["weights"]["w_view"], w[:2])
    assert back["seq_lens"].dtype == torch.int32 and back["lens"] == [3, 5] and back["shape"] == [2, 3]
    assert back["nan"] != back["nan"] and back["none"] is None


def test_a_message_refuses_to_carry_objects(tmp_path):
    with pytest.raises(TypeError, match=r"message field message.x is a _Payload"):
        write_message(tmp_path / "job", {"x": _Payload(tmp_path / "s")})


def test_a_pickle_or_an_unknown_type_in_a_run_folder_is_refused_and_never_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    (tmp_path / "job.json").write_bytes(pickle.dumps(_Payload(sentinel)))
    with pytest.raises(KernelError, match=r"cannot read the message .*job.json.*only JSON and safetensors"):
        read_message(tmp_path / "job")
    (tmp_path / "job.json").write_text(json.dumps({"x": {"__type__": "builtins.exec", "fields": {}}}))
    with pytest.raises(KernelError, match=r"type 'builtins.exec'; a message may only hold Qwen3Config, TilingPlan, ShardPlan"):
        read_message(tmp_path / "job")
    assert not sentinel.exists()


def test_the_worker_reads_no_pickle_even_when_one_is_handed_to_it(tmp_path):
    """The printed ``repro:`` command on a run folder whose job file was swapped for a pickle."""
    sentinel = tmp_path / "pwned"
    (tmp_path / "job.json").write_bytes(pickle.dumps(_Payload(sentinel)))
    torch.save(_Payload(sentinel), tmp_path / "job.pt")  # the old format, beside it: never opened
    proc = subprocess.run([sys.executable, "-m", "qwenlayers.runtime.worker_main", str(tmp_path / "job"), str(tmp_path / "result")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not sentinel.exists()
    assert "cannot read the message" in read_message(tmp_path / "result")["error"]


# ---------------------------------------------------------------- 1. a private cache


def test_a_cache_others_can_write_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    monkeypatch.setenv("QWENLAYERS_CACHE_DIR", str(root))
    with pytest.raises(InputError, match=r"writable by others \(mode 777\).*chmod go-w"):
        paths.cache_dir("runs")
    root.chmod(0o755)
    (root / "platforms").mkdir()
    (root / "platforms").chmod(0o775)
    with pytest.raises(InputError, match=r"platforms is writable by its group"):
        paths.cache_dir("platforms", "a5sim")
    (root / "platforms").chmod(0o755)
    assert paths.cache_dir("platforms", "a5sim").stat().st_mode & 0o077 == 0  # created private


def test_a_cache_another_user_owns_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("QWENLAYERS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(paths.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(InputError, match=r"belongs to uid \d+, not to you.*QWENLAYERS_CACHE_DIR"):
        paths.cache_root()


def test_a_cache_that_cannot_be_written_says_so(tmp_path, monkeypatch):
    """(As root, file modes do not stop writes; the failure is simulated where mkdir fails.)"""
    monkeypatch.setenv("QWENLAYERS_CACHE_DIR", str(tmp_path))

    def refuse(self, *args, **kwargs):
        if self != tmp_path:
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(InputError, match=r"cannot create the cache folder .*runs: Permission denied.*QWENLAYERS_CACHE_DIR"):
        paths.cache_dir("runs")


# ---------------------------------------------------------------- 5. caches that heal


def test_an_unreadable_cache_entry_is_a_miss_with_one_warning_naming_it(tmp_path):
    bad = tmp_path / "entry.json"
    bad.write_text('{"truncated": ')
    with pytest.warns(CacheWarning, match=r"entry.json"):
        assert read_json(bad, "tuned-plan cache") is None
    assert read_json(tmp_path / "missing.json", "tuned-plan cache") is None


def test_a_calibration_with_no_real_rate_is_not_a_calibration(tmp_path):
    fields = {"platform": "x", "pypto": "0.2.0", "bandwidth_gb_s": -1.0, "cube_tflops": 100.0, "vector_gops": 10.0,
              "stream_us": 1.0, "matmul_us": 1.0, "vector_us": 1.0, "vector_stream_gb_s": 1.0, "cube_stream_gb_s": 1.0}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(fields))
    with pytest.warns(CacheWarning, match=r"bandwidth_gb_s.*not a measured rate"):
        assert calibration._cached(path) is None
    path.write_text(json.dumps({**fields, "bandwidth_gb_s": 1300.0}))
    assert calibration._cached(path).bandwidth_gb_s == 1300.0
    path.write_text(json.dumps({"platform": "x"}))
    with pytest.warns(CacheWarning, match=r"cal.json"):
        assert calibration._cached(path) is None


def test_a_corrupt_tuned_plan_file_falls_back_to_the_default_plan(tmp_path, monkeypatch):
    import qwenlayers
    from qwenlayers import plans

    monkeypatch.setenv("QWENLAYERS_TUNED_DIR", str(tmp_path))
    cfg = preset("tiny")
    default = qwenlayers.plan(cfg, "decode", platform="a5sim", batch=1, seq_len=64)
    store = plans._store(qwenlayers.registry.get_registry().select("a5sim"))
    for text in ("garbage", '{"a": 1', "[1, 2]", json.dumps({"k": {"values": {"tok_tile": "16"}}})):
        store.write_text(text)
        with pytest.warns(CacheWarning, match=str(store.name)):
            assert qwenlayers.plan(cfg, "decode", platform="a5sim", batch=1, seq_len=64) == default


def test_a_reader_never_sees_half_a_cache_write(tmp_path):
    path = tmp_path / "plans.json"
    atomic_write_text(path, json.dumps({"n": 0}))
    failures, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(300):
        atomic_write_text(path, json.dumps({"n": n, "pad": "x" * 20000}))
    stop.set()
    reader.join()
    assert failures == [] and sorted(p.name for p in tmp_path.iterdir()) == ["plans.json"]


# ---------------------------------------------------------------- 5. no work left behind


def _children(pid: int) -> list[int]:
    """pids whose parent is ``pid`` (from the process table)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(proc.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _worker_of(cli_pid: int) -> int | None:
    return next((pid for pid in _children(cli_pid) if b"qwenlayers.runtime.worker_main" in _cmdline(pid)), None)


def _default_sigint() -> None:
    """A suite started in the background by a shell without job control inherits SIGINT
    ignored, and Python then keeps it ignored: give the CLI Ctrl-C as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.sim
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGHUP, 128 + signal.SIGHUP),
                                       (signal.SIGINT, None)])
def test_a_signal_to_the_cli_stops_its_worker_and_removes_the_run_folder(runnable_platform, sig, code):
    cli = subprocess.Popen([sys.executable, "-m", "qwenlayers.cli", "run", "--phase", "prefill", "--model", "tiny",
                            "--seq-len", "64", "-p", runnable_platform.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while (worker := _worker_of(cli.pid)) is None and time.monotonic() < deadline and cli.poll() is None:
        time.sleep(0.2)
    assert worker is not None, "the run never started a worker"
    time.sleep(1.0)  # let the worker start its own subprocesses (pypto's compile)
    group = [worker, *_children(worker)]
    job = Path(_cmdline(worker).split(b"\0")[3].decode())  # python -m qwenlayers.runtime.worker_main JOB RESULT
    mine = {job.parent}  # its run folder (not a diff of the cache: other runs may share it)
    cli.send_signal(sig)
    out = cli.communicate(timeout=60)[0].decode(errors="replace")
    assert (cli.returncode == code) if code else cli.returncode != 0, out
    assert "Traceback" not in out
    assert not [pid for pid in group if _alive(pid)], "a worker process outlived the run"
    assert mine and all(p.is_relative_to(paths.cache_dir("runs")) for p in mine)
    assert not any(p.exists() for p in mine), f"run folder left behind: {mine}"


@pytest.mark.parametrize("value", ["garbage", "nan", "inf", "0", "-2"])
def test_the_worker_memory_limit_must_be_a_size(monkeypatch, value):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_LIMIT_GB", value)
    with pytest.raises(InputError, match=r"QWENLAYERS_WORKER_MEM_LIMIT_GB=.* is not a memory limit"):
        worker.memory_limit_bytes()


@pytest.mark.sim
def test_a_worker_past_the_memory_limit_is_stopped_with_its_figures(runnable_platform, monkeypatch):
    """A run nothing estimated (here: any run, under a 0.2 GB limit) fails with its figures
    instead of growing until the OOM killer takes the machine's biggest process."""
    import qwenlayers

    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_LIMIT_GB", "0.2")
    cfg = preset("tiny")
    weights = qwenlayers.LayerWeights.random(cfg, seed=0)
    hidden = torch.randn(1, 32, cfg.hidden_size).bfloat16()
    before = hidden.clone()
    with pytest.raises(KernelError, match=r"stopped at \d+\.\d GB resident: the limit is 0\.2 GB") as err:
        qwenlayers.prefill(cfg, weights, hidden, torch.tensor([32], dtype=torch.int32), platform=runnable_platform.name)
    assert torch.equal(hidden, before)
    kept = Path(str(err.value).rsplit("Run folder kept: ", 1)[1].strip())
    assert kept.is_dir()
    shutil.rmtree(kept)
    assert _worker_of(os.getpid()) is None  # no worker of this process left running


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.mark.sim
def test_sigterm_to_a_tensor_parallel_run_stops_every_rank_and_its_worker(runnable_platform):
    cli = subprocess.Popen([sys.executable, "-m", "qwenlayers.cli", "run", "--tp", "2", "--phase", "prefill", "--model", "tiny",
                            "--seq-len", "64", "-p", runnable_platform.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline and cli.poll() is None:
        tree = _descendants(cli.pid)
        workers = [p for p in tree if b"qwenlayers.runtime.worker_main" in _cmdline(p)]
        time.sleep(0.2)
    assert len(workers) == 2, "the ranks never started their workers"
    tree = _descendants(cli.pid)
    cli.send_signal(signal.SIGTERM)
    out = cli.communicate(timeout=120)[0].decode(errors="replace")
    assert cli.returncode == 128 + signal.SIGTERM, out
    time.sleep(0.5)
    assert not [pid for pid in tree if _alive(pid)], "a rank or a worker outlived the run"


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""
