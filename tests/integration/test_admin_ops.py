"""gpushell-admin list, apply and doctor on the real host (the lab's own chain, users, lxcpath)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from typing import Any

from .lab import Lab, Student, sh


def chain_rules(lab: Lab) -> list[str]:
    save = sh(["iptables-save", "-t", "nat"]).stdout
    return [line for line in save.splitlines() if line.startswith(f"-A {lab.chain} ")]


def jump(lab: Lab, parent: str) -> list[str]:
    return [parent, "-m", "addrtype", "--dst-type", "LOCAL", "-j", lab.chain]


def config_of(lab: Lab, student: Student) -> str:
    with open(f"{lab.lxcpath}/{student.container}/config", encoding="utf-8") as stream:
        return stream.read()


def listing(lab: Lab) -> dict[str, Any]:
    result = lab.admin("list", "--json")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_apply_restores_every_forward_after_the_chain_is_flushed(lab: Lab, student: Student) -> None:
    other = lab.add_student("fw")
    try:
        assert lab.ssh(other, "start").returncode == 0
        sh(["iptables", "-t", "nat", "-F", lab.chain])
        assert lab.rules_for(student.name) == [] and lab.rules_for(other.name) == []
        assert lab.ssh(other, "hostname", port=other.port, timeout=30).returncode != 0
        result = lab.admin("apply")
        assert f"done: rebuild nat chain {lab.chain}" in result.stdout
        assert len(lab.rules_for(student.name)) == 1 and len(lab.rules_for(other.name)) == 1
        # The jumps into the chain survived: the forward works end to end.
        reached = lab.ssh(other, "hostname", port=other.port)
        assert (reached.returncode, reached.stdout.strip()) == (0, other.container), reached.stderr
    finally:
        lab.admin("remove", other.name, "--purge", check=False)
        lab.admin("apply", check=False)


def test_dry_run_changes_nothing_and_a_second_apply_has_nothing_to_do(lab: Lab, student: Student) -> None:
    try:
        sh(["iptables", "-t", "nat", "-F", lab.chain])
        user = pwd.getpwnam(student.name)
        sh(["usermod", "--shell", "/bin/sh", student.name])
        before = (chain_rules(lab), config_of(lab, student))
        dry = lab.admin("apply", "--dry-run")
        assert f"would rebuild nat chain {lab.chain}" in dry.stdout
        assert f"would fix account {student.name}: login shell /bin/sh -> {lab.paths['shell']}" in dry.stdout
        assert "nothing changed" in dry.stdout
        assert (chain_rules(lab), config_of(lab, student)) == before == ([], before[1])
        assert pwd.getpwnam(student.name).pw_shell == "/bin/sh"

        first = lab.admin("apply")
        assert "nothing to do" not in first.stdout
        assert len(lab.rules_for(student.name)) == 1
        assert pwd.getpwnam(student.name).pw_shell == user.pw_shell == lab.paths["shell"]
        rules = chain_rules(lab)
        second = lab.admin("apply")
        assert second.stdout.strip() == "nothing to do: the host matches the registry"
        assert chain_rules(lab) == rules
        assert lab.admin("apply", "--dry-run").stdout.strip().startswith("nothing to do")
    finally:
        sh(["usermod", "--shell", lab.paths["shell"], student.name], check=False)
        lab.admin("apply", check=False)


def test_apply_regenerates_a_hand_changed_config(lab: Lab, student: Student) -> None:
    path = f"{lab.lxcpath}/{student.container}/config"
    original = config_of(lab, student)
    try:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(original.replace("lxc.start.auto = 0", "lxc.start.auto = 1") + "lxc.test = 1\n")
        result = lab.admin("apply")
        assert f"done: regenerate {path} from the registry" in result.stdout
        assert config_of(lab, student) == original
        assert os.stat(path).st_mode & 0o777 == 0o644
        assert "nothing to do" in lab.admin("apply").stdout
    finally:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(original)


def test_apply_fixes_a_wrong_login_shell(lab: Lab, student: Student) -> None:
    try:
        sh(["usermod", "--shell", "/bin/bash", student.name])
        result = lab.admin("apply")
        fixed = f"done: fix account {student.name}: login shell /bin/bash -> {lab.paths['shell']}"
        assert fixed in result.stdout
        assert pwd.getpwnam(student.name).pw_shell == lab.paths["shell"]
    finally:
        sh(["usermod", "--shell", lab.paths["shell"], student.name])


def test_list_shows_a_running_and_a_stopped_container(lab: Lab, student: Student) -> None:
    idle = lab.add_student("idle")
    try:
        assert lab.ssh(student, "start").returncode == 0
        data = listing(lab)
        rows = {row["user"]: row for row in data["users"]}
        running, stopped = rows[student.name], rows[idle.name]
        assert running["state"] == "RUNNING"
        assert (running["port"], running["ip"], running["gpus"]) == (student.port, student.ip, "none")
        assert running["memory_bytes"] > 0
        assert running["cpu_percent"] is not None and running["cpu_percent"] >= 0
        assert 0 <= running["uptime_seconds"] < 3600
        assert stopped["state"] == "STOPPED"
        assert (stopped["memory_bytes"], stopped["cpu_percent"], stopped["uptime_seconds"]) == (None,) * 3
        table = lab.admin("list")
        header, *lines = table.stdout.splitlines()
        assert header.split() == ["USER", "PORT", "IP", "STATE", "GPUS", "CPU%", "MEM", "UPTIME"]
        mine = next(line.split() for line in lines if line.split()[0] == student.name)
        assert mine[1:4] == [str(student.port), student.ip, "RUNNING"]
        assert mine[6][-1] in "KMG"
    finally:
        lab.ssh(student, "stop")
        lab.admin("remove", idle.name, "--purge", check=False)


def test_list_warns_of_orphan_rules_and_unregistered_containers(lab: Lab, student: Student) -> None:
    ghost = f"{lab.prefix}ghost"
    rule = [
        lab.chain, "-p", "tcp", "-m", "tcp", "--dport", "22998", "-m", "comment",
        "--comment", f"gpushell:{ghost}", "-j", "DNAT", "--to-destination", f"{student.ip}:22",
    ]  # fmt: skip
    stray = f"{lab.lxcpath}/{lab.prefix}stray"
    try:
        assert listing(lab)["warnings"] == []
        sh(["iptables", "-t", "nat", "-A", *rule])
        os.makedirs(stray, mode=0o700)
        with open(f"{stray}/config", "w", encoding="utf-8") as stream:
            stream.write("lxc.uts.name = stray\n")
        warnings = listing(lab)["warnings"]
        assert any(f"gpushell:{ghost}" in warning and "orphan" in warning for warning in warnings), warnings
        assert any(f"{lab.prefix}stray" in warning for warning in warnings), warnings
        table = lab.admin("list")
        assert f"warning: orphan rule for unregistered gpushell:{ghost}" in table.stderr
        assert ghost not in table.stdout
        # apply removes the orphan rule, and leaves the stray container alone.
        lab.admin("apply")
        assert lab.rules_for(ghost) == []
        assert os.path.isdir(stray)
    finally:
        sh(["iptables", "-t", "nat", "-D", *rule], check=False)
        shutil.rmtree(stray, ignore_errors=True)


def test_doctor_finds_a_missing_jump_and_apply_repairs_it(lab: Lab, student: Student) -> None:
    healthy = lab.admin("doctor", check=False)
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.splitlines()[-1].endswith("all ok")
    assert not [line for line in healthy.stdout.splitlines() if line.startswith("FAIL")]
    assert f"ok: {student.name}: one forward, port {student.port} -> {student.ip}:22" in healthy.stdout
    try:
        sh(["iptables", "-t", "nat", "-D", *jump(lab, "OUTPUT")])
        broken = lab.admin("doctor", check=False)
        assert broken.returncode != 0
        fails = [line for line in broken.stdout.splitlines() if line.startswith("FAIL")]
        assert fails == [f"FAIL: no jump from OUTPUT to {lab.chain} — fix: gpushell-admin apply"]
        repaired = lab.admin("apply")
        assert f"done: rebuild nat chain {lab.chain}" in repaired.stdout
        assert lab.admin("doctor", check=False).returncode == 0
    finally:
        if sh(["iptables", "-t", "nat", "-C", *jump(lab, "OUTPUT")], check=False).returncode != 0:
            sh(["iptables", "-t", "nat", "-A", *jump(lab, "OUTPUT")])


def test_doctor_reports_a_changed_config_and_a_wrong_shell(lab: Lab, student: Student) -> None:
    path = f"{lab.lxcpath}/{student.container}/config"
    original = config_of(lab, student)
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write("lxc.test = 1\n")
        sh(["usermod", "--shell", "/bin/sh", student.name])
        result = lab.admin("doctor", check=False)
        assert result.returncode != 0
        fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
        assert fails == [
            f"FAIL: {student.name}: {path} differs from the registry's — fix: gpushell-admin apply",
            f"FAIL: {student.name}: host account has shell /bin/sh — fix: gpushell-admin apply",
        ]
        lab.admin("apply")
        assert lab.admin("doctor", check=False).returncode == 0
    finally:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(original)
        sh(["usermod", "--shell", lab.paths["shell"], student.name])


def test_a_bridge_that_lost_its_address_is_found_and_given_it_back(lab: Lab, student: Student) -> None:
    address = f"{lab.subnet.network_address + 1}/{lab.subnet.prefixlen}"

    def shown() -> str:
        return sh(["ip", "-o", "-4", "addr", "show", "dev", lab.bridge]).stdout

    assert f"inet {address} " in shown()
    try:
        sh(["ip", "addr", "del", address, "dev", lab.bridge])
        broken = lab.admin("doctor", check=False)
        assert broken.returncode != 0
        assert (f"FAIL: bridge {lab.bridge} lacks the gateway address {address} — fix: gpushell-admin init"
                in broken.stdout.splitlines())  # fmt: skip
        assert f"would set up bridge {lab.bridge} with {address}" in lab.admin("apply", "--dry-run").stdout
        assert f"done: set up bridge {lab.bridge} with {address}" in lab.admin("apply").stdout
        assert f"inet {address} " in shown()
        healthy = lab.admin("doctor", check=False).stdout.splitlines()
        assert f"ok: bridge {lab.bridge} has {address}" in healthy
        assert lab.admin("apply").stdout.strip() == "nothing to do: the host matches the registry"
    finally:
        if f"inet {address} " not in shown():
            sh(["ip", "addr", "add", address, "dev", lab.bridge])
