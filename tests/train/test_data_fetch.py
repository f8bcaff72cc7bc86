"""Fetching through apt-get/npm, with the clients replaced: no network, clear errors."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from bildwerk.train.data import SourceUnavailableError, default_cache_dir, fetch_deb, fetch_npm
from bildwerk.train.data import fetch as fetch_mod


def _done(cmd, rc=0, out="", err=""):
    return subprocess.CompletedProcess(cmd, rc, out, err)


def test_apt_update_once_when_lists_are_missing(tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_run(cmd, *, cwd=None, timeout=0):
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "download"]:
            if ["apt-get", "update"] not in calls:
                return _done(cmd, 100, err="E: Unable to locate package tuxpaint-stamps-default")
            (Path(cwd) / "tuxpaint-stamps-default_2022.06.04-1_all.deb").write_bytes(b"deb")
            return _done(cmd)
        if cmd[:2] == ["dpkg-deb", "-f"]:
            return _done(cmd, out="2022.06.04-1\n")
        if cmd[:2] == ["dpkg", "-x"]:
            Path(cmd[3], "usr/share/tuxpaint/stamps").mkdir(parents=True)
            return _done(cmd)
        return _done(cmd)  # apt-get update

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    pkg = fetch_deb("tuxpaint-stamps-default", tmp_path)
    assert pkg.version == "2022.06.04-1" and (pkg.root / "usr/share/tuxpaint/stamps").is_dir()
    assert [c[:2] for c in calls].count(["apt-get", "update"]) == 1
    # second call: served from the cache, no client runs
    calls.clear()
    assert fetch_deb("tuxpaint-stamps-default", tmp_path).root == pkg.root and calls == []


def test_unreachable_mirror_gives_a_clear_error(tmp_path, monkeypatch):
    def fake_run(cmd, *, cwd=None, timeout=0):
        return _done(cmd, 100, err="E: Failed to fetch http://deb.debian.org/... Could not resolve host")

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    with pytest.raises(SourceUnavailableError, match="Debian mirror reachable"):
        fetch_deb("openclipart-png", tmp_path)


def test_missing_client_is_reported(tmp_path, monkeypatch):
    def no_npm(*args, **kwargs):
        raise FileNotFoundError("npm")

    monkeypatch.setattr(fetch_mod.subprocess, "run", no_npm)
    with pytest.raises(SourceUnavailableError, match="`npm` is not installed"):
        fetch_npm("emoji-datasource-twitter", "16.0.0", tmp_path)


def test_npm_pack_and_safe_untar(tmp_path, monkeypatch):
    def fake_run(cmd, *, cwd=None, timeout=0):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            data = json.dumps([]).encode()
            info = tarfile.TarInfo("package/emoji.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        (Path(cwd) / "emoji-datasource-twitter-16.0.0.tgz").write_bytes(buf.getvalue())
        return _done(cmd, out="emoji-datasource-twitter-16.0.0.tgz\n")

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    pkg = fetch_npm("emoji-datasource-twitter", "16.0.0", tmp_path)
    assert (pkg.root / "package/emoji.json").is_file() and pkg.version == "16.0.0"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BILDWERK_SOURCES_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BILDWERK_SOURCES_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg/bildwerk/sources"
