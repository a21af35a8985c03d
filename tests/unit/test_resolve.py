"""Finding Dask's executables on POSIX and Windows layouts, built as fake trees (no processes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path, PureWindowsPath

import pytest

from clusterctl.errors import ResolveError
from clusterctl.plan.resolve import Launcher, Platform, resolve

# -- POSIX: real files under tmp_path -------------------------------------------------


def touch_exe(path: Path, mode: int = 0o755) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return str(path)


def posix(tmp_path: Path, *, path: list[Path] = (), has_distributed: bool = False,
          executable: Path | None = None) -> Platform:
    """An interpreter at <tmp>/py/bin/python (created) and the given PATH."""
    exe = executable or tmp_path / "py" / "bin" / "python"
    if not exe.exists():
        touch_exe(exe)
    return Platform(
        windows=False,
        executable=str(exe),
        path=os.pathsep.join(str(p) for p in path),
        pathext="",
        has_distributed=lambda python: has_distributed,
    )


def resolve_error(**kwargs) -> str:
    with pytest.raises(ResolveError) as info:
        resolve(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 2
    return msg


def test_dask_beside_the_interpreter(tmp_path):
    dask = touch_exe(tmp_path / "py" / "bin" / "dask")
    other = tmp_path / "other"
    touch_exe(other / "dask")
    launcher = resolve(platform=posix(tmp_path, path=[other]))
    assert launcher == Launcher((dask, "scheduler"), (dask, "worker"), launcher.how)
    assert "beside the interpreter" in launcher.how


def test_dask_on_path_in_path_order(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    touch_exe(second / "dask")
    dask = touch_exe(first / "dask")
    launcher = resolve(platform=posix(tmp_path, path=[tmp_path / "empty", first, second]))
    assert launcher.scheduler == (dask, "scheduler") and launcher.worker == (dask, "worker")
    assert "on PATH" in launcher.how


def test_a_dask_that_is_not_executable_is_skipped(tmp_path):
    touch_exe(tmp_path / "first" / "dask", mode=0o644)
    dask = touch_exe(tmp_path / "second" / "dask")
    launcher = resolve(platform=posix(tmp_path, path=[tmp_path / "first", tmp_path / "second"]))
    assert launcher.scheduler[0] == dask


def test_a_directory_named_dask_is_skipped(tmp_path):
    (tmp_path / "first" / "dask").mkdir(parents=True)
    dask = touch_exe(tmp_path / "second" / "dask")
    launcher = resolve(platform=posix(tmp_path, path=[tmp_path / "first", tmp_path / "second"]))
    assert launcher.scheduler[0] == dask


def test_current_directory_is_never_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch_exe(tmp_path / "dask")
    plat = Platform(windows=False, executable=touch_exe(tmp_path / "py" / "bin" / "python"),
                    path=":.:", has_distributed=lambda p: False)
    assert "cannot find Dask" in resolve_error(platform=plat)


def test_legacy_scripts_on_path(tmp_path):
    bin_ = tmp_path / "old"
    sched = touch_exe(bin_ / "dask-scheduler")
    worker = touch_exe(bin_ / "dask-worker")
    launcher = resolve(platform=posix(tmp_path, path=[bin_], has_distributed=True))
    assert launcher.scheduler == (sched,) and launcher.worker == (worker,)
    assert "legacy" in launcher.how


def test_legacy_needs_both_scripts(tmp_path):
    touch_exe(tmp_path / "old" / "dask-scheduler")
    plat = posix(tmp_path, path=[tmp_path / "old"], has_distributed=True)
    assert resolve(platform=plat).scheduler[1:] == ("-m", "distributed.cli.dask_scheduler")


def test_module_fallback(tmp_path):
    plat = posix(tmp_path, path=[tmp_path / "nothing"], has_distributed=True)
    launcher = resolve(platform=plat)
    assert launcher.scheduler == (plat.executable, "-m", "distributed.cli.dask_scheduler")
    assert launcher.worker == (plat.executable, "-m", "distributed.cli.dask_worker")
    assert "-m distributed.cli" in launcher.how


def test_nothing_found_says_what_was_searched_posix(tmp_path):
    plat = posix(tmp_path, path=[tmp_path / "nothing"])
    msg = resolve_error(platform=plat)
    assert msg.startswith("cannot find Dask: searched")
    for searched in (f"`dask` beside {plat.executable}", "`dask` on PATH",
                     "legacy `dask-scheduler`/`dask-worker` on PATH", f"{plat.executable} -m distributed.cli"):
        assert searched in msg, msg
    assert "export PATH=$PATH:" in msg and "bin_dir:" in msg and "pip install" in msg
    assert "Environment Variables" not in msg and "Scripts" not in msg


def test_pinned_bin_dir_wins(tmp_path):
    touch_exe(tmp_path / "py" / "bin" / "dask")
    dask = touch_exe(tmp_path / "pinned" / "dask")
    launcher = resolve(bin_dir=str(tmp_path / "pinned"), python="/nonexistent/python",
                       platform=posix(tmp_path))
    assert launcher.scheduler == (dask, "scheduler") and "bin_dir" in launcher.how


def test_pinned_bin_dir_with_legacy_scripts(tmp_path):
    sched = touch_exe(tmp_path / "pinned" / "dask-scheduler")
    worker = touch_exe(tmp_path / "pinned" / "dask-worker")
    launcher = resolve(bin_dir=str(tmp_path / "pinned"), platform=posix(tmp_path))
    assert launcher.scheduler == (sched,) and launcher.worker == (worker,)


def test_pinned_bin_dir_without_dask_is_an_error(tmp_path):
    touch_exe(tmp_path / "py" / "bin" / "dask")  # would be found otherwise: a pin is a pin
    (tmp_path / "pinned").mkdir()
    msg = resolve_error(bin_dir=str(tmp_path / "pinned"), platform=posix(tmp_path, has_distributed=True))
    assert f"bin_dir: {str(tmp_path / 'pinned')!r}" in msg and "no `dask`" in msg, msg
    assert f"{tmp_path / 'pinned'}/pip install" in msg


def test_pinned_python_uses_its_own_dask(tmp_path):
    touch_exe(tmp_path / "py" / "bin" / "dask")
    other = touch_exe(tmp_path / "env" / "bin" / "python")
    dask = touch_exe(tmp_path / "env" / "bin" / "dask")
    launcher = resolve(python=other, platform=posix(tmp_path))
    assert launcher.scheduler == (dask, "scheduler") and "python:" in launcher.how


def test_pinned_python_falls_back_to_its_module(tmp_path):
    touch_exe(tmp_path / "py" / "bin" / "dask")  # the running interpreter's dask is not the pin's
    other = touch_exe(tmp_path / "env" / "bin" / "python")
    launcher = resolve(python=other, platform=posix(tmp_path, has_distributed=True))
    assert launcher.scheduler == (other, "-m", "distributed.cli.dask_scheduler")


def test_pinned_python_without_distributed_is_an_error(tmp_path):
    other = touch_exe(tmp_path / "env" / "bin" / "python")
    msg = resolve_error(python=other, platform=posix(tmp_path, has_distributed=False))
    assert repr(other) in msg and "distributed" in msg and "pip install" in msg, msg


def test_pinned_python_must_exist(tmp_path):
    msg = resolve_error(python=str(tmp_path / "missing" / "python"), platform=posix(tmp_path))
    assert "not an executable file" in msg, msg


def test_pinned_python_by_bare_name_is_looked_up_on_path(tmp_path):
    python3 = touch_exe(tmp_path / "usr" / "bin" / "python3")
    dask = touch_exe(tmp_path / "usr" / "bin" / "dask")
    launcher = resolve(python="python3", platform=posix(tmp_path, path=[tmp_path / "usr" / "bin"]))
    assert launcher.scheduler == (dask, "scheduler") and python3 in launcher.how


def test_platform_reads_the_environment_when_made(monkeypatch):
    monkeypatch.setenv("PATH", "/made/later")
    assert Platform().path == "/made/later"
    assert Platform().executable == sys.executable


def test_real_machine_finds_the_venv_dask():
    launcher = resolve()
    # The venv's bin/ (Scripts\ on Windows) holds both the interpreter and dask (+ .exe there).
    expected = str(Path(sys.executable).parent / "dask")
    assert launcher.scheduler[0].lower().startswith(expected.lower()), launcher
    assert "beside the interpreter" in launcher.how
    assert launcher.scheduler[1:] == ("scheduler",) and launcher.worker[1:] == ("worker",)
    assert os.path.isfile(launcher.scheduler[0])


# -- Windows: PureWindowsPath strings mapped onto a case-insensitive fake tree -------------


class FakeWindows:
    """`C:\\Py\\Scripts\\dask.exe` lives at <tmp>/c/py/scripts/dask.exe: NTFS ignores case."""

    def __init__(self, root: Path):
        self.root = root

    def local(self, win: str) -> Path:
        p = PureWindowsPath(win)
        assert p.drive, f"not an absolute Windows path: {win!r}"
        parts = [p.drive.rstrip(":").lower(), *(part.lower() for part in p.parts[1:])]
        return self.root.joinpath(*parts)

    def make(self, *paths: str) -> None:
        for win in paths:
            target = self.local(win)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"MZ")

    def is_executable(self, win: str) -> bool:
        try:
            return self.local(win).is_file()
        except AssertionError:
            return False

    def platform(self, executable: str, path: str = "", pathext: str = ".COM;.EXE;.BAT;.CMD",
                 has_distributed: bool = False) -> Platform:
        return Platform(windows=True, executable=executable, path=path, pathext=pathext,
                        is_executable=self.is_executable, has_distributed=lambda p: has_distributed)


@pytest.fixture
def win(tmp_path) -> FakeWindows:
    return FakeWindows(tmp_path)


def test_windows_base_install_scripts_folder(win):
    win.make(r"C:\Python311\python.exe", r"C:\Python311\Scripts\dask.exe")
    plat = win.platform(r"C:\Python311\python.exe")
    assert plat.script_dirs(r"C:\Python311\python.exe") == [r"C:\Python311", r"C:\Python311\Scripts"]
    launcher = resolve(platform=plat)
    assert launcher.scheduler == (r"C:\Python311\Scripts\dask.exe", "scheduler")
    assert launcher.worker == (r"C:\Python311\Scripts\dask.exe", "worker")


def test_windows_venv_layout(win):
    win.make(r"C:\proj\.venv\Scripts\python.exe", r"C:\proj\.venv\Scripts\dask.exe")
    plat = win.platform(r"C:\proj\.venv\Scripts\python.exe")
    assert plat.script_dirs(r"C:\proj\.venv\scripts\python.exe") == [r"C:\proj\.venv\scripts"]
    assert resolve(platform=plat).scheduler[0] == r"C:\proj\.venv\Scripts\dask.exe"


def test_windows_path_with_upper_case_pathext(win):
    win.make(r"C:\Python311\python.exe", r"D:\Tools\DASK.EXE")
    plat = win.platform(r"C:\Python311\python.exe", path=r"C:\Windows;D:\Tools", pathext=".COM;.EXE;.BAT;.CMD")
    launcher = resolve(platform=plat)
    assert launcher.scheduler == (r"D:\Tools\dask.exe", "scheduler")
    assert "on PATH" in launcher.how


def test_windows_batch_file_and_pathext_order(win):
    win.make(r"C:\Python311\python.exe", r"D:\Tools\dask.bat")
    plat = win.platform(r"C:\Python311\python.exe", path=r"D:\Tools")
    assert resolve(platform=plat).scheduler[0] == r"D:\Tools\dask.bat"
    win.make(r"D:\Tools\dask.exe")  # same folder: PATHEXT order puts .EXE before .BAT
    assert resolve(platform=plat).scheduler[0] == r"D:\Tools\dask.exe"


def test_windows_ignores_extensionless_and_unlisted_files(win):
    win.make(r"C:\Python311\python.exe", r"D:\Tools\dask", r"D:\Tools\dask.ps1")
    plat = win.platform(r"C:\Python311\python.exe", path=r"D:\Tools")
    assert "cannot find Dask" in resolve_error(platform=plat)


def test_windows_quoted_path_entry(win):
    win.make(r"C:\Python311\python.exe", r"C:\Program Files\Dask\dask.exe")
    plat = win.platform(r"C:\Python311\python.exe", path=r'C:\Windows;"C:\Program Files\Dask";')
    assert resolve(platform=plat).scheduler[0] == r"C:\Program Files\Dask\dask.exe"


def test_windows_legacy_scripts(win):
    win.make(r"C:\Python311\python.exe", r"C:\old\dask-scheduler.exe", r"C:\old\dask-worker.exe")
    launcher = resolve(platform=win.platform(r"C:\Python311\python.exe", path=r"C:\old"))
    assert launcher.scheduler == (r"C:\old\dask-scheduler.exe",)
    assert launcher.worker == (r"C:\old\dask-worker.exe",)


def test_windows_module_fallback(win):
    win.make(r"C:\Python311\python.exe")
    launcher = resolve(platform=win.platform(r"C:\Python311\python.exe", has_distributed=True))
    assert launcher.scheduler == (r"C:\Python311\python.exe", "-m", "distributed.cli.dask_scheduler")


def test_windows_pinned_python_and_bin_dir(win):
    win.make(r"C:\Python311\python.exe", r"C:\Python311\Scripts\dask.exe",
             r"E:\envs\lab\python.exe", r"E:\envs\lab\Scripts\dask.exe",
             r"F:\bin\dask.cmd")
    plat = win.platform(r"C:\Python311\python.exe")
    assert resolve(python=r"E:\envs\lab\python.exe", platform=plat).scheduler[0] == r"E:\envs\lab\Scripts\dask.exe"
    assert resolve(bin_dir=r"F:\bin", platform=plat).scheduler[0] == r"F:\bin\dask.cmd"
    msg = resolve_error(bin_dir=r"G:\empty", platform=plat)
    assert r"G:\empty\pip install" in msg, msg


def test_nothing_found_says_how_to_fix_path_on_windows(win):
    win.make(r"C:\Python311\python.exe")
    plat = win.platform(r"C:\Python311\python.exe", path=r"C:\Windows")
    msg = resolve_error(platform=plat)
    assert r"C:\Python311\Scripts" in msg  # where it looked
    assert "Scripts" in msg and "Environment Variables" in msg and "new terminal" in msg, msg
    assert "py -m pip install" in msg and "export PATH" not in msg
