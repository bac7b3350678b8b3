"""``hostsec policy check [PATH...]``: every problem of a set of policy files.

The files are judged together, as the agent would load them at start-up, so a flow may
name a peer of another checked file and duplicate names across files are found.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from hostsec.policy.files import policy_files, read_policy_file, read_secret_file
from hostsec.policy.names import is_policy_file_name
from hostsec.policy.policyset import Content, PolicySet
from hostsec.policy.problems import Problem, error, has_errors, sort_problems, warning


@dataclass(frozen=True)
class CheckResult:
    files: tuple[str, ...]
    problems: tuple[Problem, ...]
    peers: int
    flows: int

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)


def check_paths(paths: Sequence[str], *, read_secrets: bool = True) -> CheckResult:
    """Check the policy files named by ``paths`` (files, or directories of ``*.toml``)."""
    problems: list[Problem] = []
    contents: dict[str, Content] = {}
    for path in paths:
        if os.path.isdir(path):
            files = policy_files(path)
            if not files:
                problems.append(warning(path, 0, "no policy files (*.toml) in this directory"))
        elif os.path.lexists(path):
            files = [path]
            if not is_policy_file_name(path):
                problems.append(
                    warning(
                        path,
                        0,
                        "the agent ignores this file: policy files are named *.toml and are "
                        "not hidden or editor temp files",
                    )
                )
        else:
            problems.append(error(path, 0, "no such file or directory"))
            continue
        for file in files:
            content = read_policy_file(file)
            if content is None:
                problems.append(error(file, 0, "no such file"))
            else:
                contents[file] = content
    policies = PolicySet(read_secret_file if read_secrets else None, ignore_temp_files=False)
    policies.update_many(contents)
    for found in policies.problems(summary=False).values():
        problems.extend(found)
    return CheckResult(
        files=tuple(sorted(contents)),
        problems=tuple(sort_problems(list(dict.fromkeys(problems)))),
        peers=len(policies.peers),
        flows=len(policies.flows),
    )
