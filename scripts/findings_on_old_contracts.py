"""Issue 10's contract findings, each a test that must FAIL on the contracts from before the fix.

    .venv/bin/python scripts/findings_on_old_contracts.py [-k EXPR]

Two throwaway copies of the committed tree (``git archive HEAD``, so commit the tests first) in a
temporary directory, nothing written to the repository:

- **old contracts**: ``ledger_bridge/contracts/*.sol`` as of ``OLD`` (the commit before issue 10's contract
  fixes), built with the pinned solc by ``ledger_bridge/build_contracts.mjs`` and checked byte-identical to
  the artifacts committed at ``OLD``; they replace today's artifacts, and ``OLD``'s ``reverts.py`` gives
  the old errors their old words (today's templates read fields the old errors do not have).
- **old node**: today's tree with ``ledger_bridge/node.py`` as of ``OLD`` (reverts answered without data).

Every test named in ``FINDINGS`` runs there on every backend, and on an unmodified copy; the script prints
each one's outcome on both and the old run's first error line, and exits 1 if one of them passes on the
old code (a finding whose test cannot fail) or does not pass today. Needs git history, node and
``make bootstrap``'s npm packages; about 3 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = "7f7a4bd^"  # 7f7a4bd: "contracts scoped to their actors; revert data through the embedded node"
CONTRACTS = ("DeviceRegistry", "AuthenticationLog")

S = "tests/ledger/test_scoping.py::"
R = "tests/ledger/test_revert_names.py::"
ROLES = "tests/ledger/test_roles.py::test_role_restriction"
# finding -> (tree, test node ids or -k over a file)
FINDINGS: dict[str, tuple[str, list[str]]] = {
    "a: policy squatting and foreign policies": (
        "contracts",
        [
            S + "test_a_predictable_policy_id_cannot_be_squatted",
            S + "test_set_policy_never_takes_another_authors_policy_so_its_author_cannot_steer_the_device",
            S + "test_a_previous_owners_private_policy_is_dropped_at_transfer",
            S + "test_another_owners_policy_is_refused_unless_shared_and_then_frozen",
        ],
    ),
    "b: cloneAlert from any gateway": (
        "contracts",
        [S + "test_clone_alert_only_from_a_gateway_authorized_for_the_device"],
    ),
    "c: anchors keyed by root alone": (
        "contracts",
        [
            S + "test_anchors_are_keyed_by_gateway_and_root_so_nobody_front_runs_a_root",
            S + "test_a_front_run_root_keeps_the_consoles_inclusion_proof",
        ],
    ),
    "d: gateway keys and accounts fixed for ever": (
        "contracts",
        [
            S + "test_rotating_a_gateway_key_voids_its_grants_until_the_epoch_moves",
            S + "test_a_gateway_account_can_be_changed_and_the_old_one_stops_signing",
            S + "test_a_removed_gateway_loses_its_account_its_grants_and_its_id",
            S + "test_a_removed_gateways_devices_can_have_their_epoch_bumped",
            S + "test_the_index_follows_rotation_and_removal",
            "tests/ledger/test_cli.py::test_cli_rotates_changes_and_removes_a_gateway",
            ROLES + "[eth-tester-rotateGatewayKey is the gateway operator's]",
            ROLES + "[eth-tester-changeGatewayAccount is the gateway operator's]",
            ROLES + "[eth-tester-removeGateway is the gateway operator's (or an admin's)]",
        ],
    ),
    "e: errors without names": (
        "node",
        [
            R + "test_the_embedded_node_returns_revert_data",
            R + "test_the_cli_prints_the_name_and_meaning_through_the_node",
        ],
    ),
    "e: errors without words": ("contracts", [R + "test_every_custom_error_has_words"]),
}


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload,no-any-return]  # noqa: S603


def _git_show(path: str) -> bytes:
    return _run(["git", "-C", str(ROOT), "show", f"{OLD}:{path}"], capture_output=True).stdout


def _tree(where: Path) -> Path:
    where.mkdir()
    archive = _run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True).stdout
    _run(["tar", "-x", "-C", str(where)], input=archive)
    (where / "ledger_bridge" / "node_modules").symlink_to(ROOT / "ledger_bridge" / "node_modules")
    return where


def _old_artifacts(tmp: Path) -> Path:
    build = tmp / "build"
    (build / "contracts").mkdir(parents=True)
    shutil.copy(ROOT / "ledger_bridge" / "build_contracts.mjs", build)
    (build / "node_modules").symlink_to(ROOT / "ledger_bridge" / "node_modules")
    for name in CONTRACTS:
        (build / "contracts" / f"{name}.sol").write_bytes(_git_show(f"ledger_bridge/contracts/{name}.sol"))
        (tmp / f"{name}.committed.json").write_bytes(_git_show(f"ledger_bridge/artifacts/{name}.json"))
    out = tmp / "artifacts"
    _run(["node", "build_contracts.mjs", str(out)], cwd=build, stdout=subprocess.DEVNULL)
    for name in CONTRACTS:
        if not filecmp.cmp(out / f"{name}.json", tmp / f"{name}.committed.json", shallow=False):
            sys.exit(f"{name}: the old sources do not rebuild to the artifacts committed at {OLD}")
    return out


def _pytest(tree: Path, tests: list[str], extra: list[str]) -> dict[str, str]:
    junit = tree / "junit.xml"
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *tests]
    subprocess.run([*cmd, *extra], cwd=tree, env=env, stdout=subprocess.DEVNULL, check=False)  # noqa: S603
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):  # noqa: S314
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        line = (failure.get("message") or "").splitlines()[0][:150] if failure is not None else ""
        outcomes[f"{case.get('name')}"] = f"FAILED  {line}" if failure is not None else "passed"
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="pytest -k expression (e.g. eth-tester)")
    args = parser.parse_args()
    extra = ["-k", args.k] if args.k else []
    with tempfile.TemporaryDirectory(prefix="diams-old-contracts-") as name:
        tmp = Path(name)
        artifacts = _old_artifacts(tmp)
        contracts = _tree(tmp / "contracts")
        for name_ in CONTRACTS:
            shutil.copy(artifacts / f"{name_}.json", contracts / "ledger_bridge" / "artifacts")
        (contracts / "ledger_bridge" / "reverts.py").write_bytes(_git_show("ledger_bridge/reverts.py"))
        node = _tree(tmp / "node")
        (node / "ledger_bridge" / "node.py").write_bytes(_git_show("ledger_bridge/node.py"))
        today = _tree(tmp / "today")
        trees = {"contracts": contracts, "node": node}
        passed_on_old = failed_today = 0
        for finding, (tree, tests) in FINDINGS.items():
            print(f"## {finding} (old {tree})")
            now = _pytest(today, tests, extra)
            for test, outcome in sorted(_pytest(trees[tree], tests, extra).items()):
                print(f"  old {outcome.split()[0]}, today {now.get(test, 'not run').split()[0]}: {test}")
                print(f"      {' '.join(outcome.split()[1:])}")
                passed_on_old += outcome == "passed"
                failed_today += now.get(test) != "passed"
    print(f"{passed_on_old} finding test(s) passed on the old code, {failed_today} did not pass today")
    return 1 if passed_on_old or failed_today else 0


if __name__ == "__main__":
    sys.exit(main())
