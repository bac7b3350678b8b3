"""Policy files: schema, loader with file:line errors, the policy set, directory watcher.

The agent's entry points::

    policies = PolicySet(read_secret=read_secret_file)
    diff = policies.update_many(scan_directory(policies_dir))        # start-up, SIGHUP
    watcher = PolicyWatcher(policies_dir, on_change)                  # hostsec.policy.watch
    ...  on_change(paths): diff = policies.update_many({p: read_policy_file(p) for p in paths})

``diff`` (a :class:`PolicyDiff`) names the peers and flows added, removed and changed;
``policies.problems()`` the current problems of every file, as ``file:line`` messages.
"""

from hostsec.policy.files import (
    policy_files,
    read_policy_file,
    read_secret_file,
    scan_directory,
)
from hostsec.policy.link import Link, flow_protocols, link_flow
from hostsec.policy.loader import ParsedFile, SecretReader, parse_policy
from hostsec.policy.manual import (
    ManualKeyFile,
    ManualKeys,
    ManualSA,
    parse_manual_keys,
    select_manual_keys,
)
from hostsec.policy.names import is_policy_file_name
from hostsec.policy.policyset import Content, PolicyDiff, PolicySet, Unreadable
from hostsec.policy.problems import (
    Location,
    PolicyError,
    Problem,
    SecretFileError,
    Severity,
)
from hostsec.policy.schema import (
    Auth,
    Encapsulation,
    Flow,
    IkeV1Mode,
    Keying,
    Mode,
    Peer,
    Protection,
    Start,
)
from hostsec.policy.secret import Secret
from hostsec.policy.values import PortRange

__all__ = [
    "Auth",
    "Content",
    "Encapsulation",
    "Flow",
    "IkeV1Mode",
    "Keying",
    "Link",
    "Location",
    "ManualKeyFile",
    "ManualKeys",
    "ManualSA",
    "Mode",
    "ParsedFile",
    "Peer",
    "PolicyDiff",
    "PolicyError",
    "PolicySet",
    "PortRange",
    "Problem",
    "Protection",
    "Secret",
    "SecretFileError",
    "SecretReader",
    "Severity",
    "Start",
    "Unreadable",
    "flow_protocols",
    "is_policy_file_name",
    "link_flow",
    "parse_manual_keys",
    "parse_policy",
    "policy_files",
    "read_policy_file",
    "read_secret_file",
    "scan_directory",
    "select_manual_keys",
]
