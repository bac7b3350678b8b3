"""The policy schema (DESIGN.md section 4): peers and flows, as frozen dataclasses.

Objects compare by content only: ``source`` (file and line) and ``lines`` (line of each
key) are left out of ``==`` so that moving a flow within its file, or adding a comment
above it, does not make it "changed". Secrets (the PSK, manual keys) compare in
constant time and never appear in a ``repr``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hostsec.crypto.proposals import Mode, Proposal
from hostsec.policy.manual import ManualKeyFile
from hostsec.policy.problems import Location
from hostsec.policy.secret import Secret
from hostsec.policy.values import IPAddress, PortRange

__all__ = [
    "Auth",
    "Encapsulation",
    "Flow",
    "IkeV1Mode",
    "Keying",
    "Mode",  # hostsec.crypto.proposals.Mode, the one SAConfig takes
    "Peer",
    "Protection",
    "Start",
]


class Auth(enum.StrEnum):
    PSK = "psk"
    CERT = "cert"


class IkeV1Mode(enum.StrEnum):
    MAIN = "main"
    AGGRESSIVE = "aggressive"


class Encapsulation(enum.StrEnum):
    AUTO = "auto"  # ESP in UDP/4500 when IKE detects a NAT (RFC 7296 2.23)
    FORCE = "force"  # always ESP in UDP/4500 (RFC 3948)
    OFF = "off"  # never


class Protection(enum.StrEnum):
    ESP = "esp"
    AH = "ah"
    ESP_AH = "esp+ah"

    @property
    def esp(self) -> bool:
        return self is not Protection.AH

    @property
    def ah(self) -> bool:
        return self is not Protection.ESP


class Start(enum.StrEnum):
    TRAP = "trap"  # the first packet of the flow starts IKE
    START = "start"  # when the policy is loaded
    MANUAL = "manual"  # only on `hostsec up`


class Keying(enum.StrEnum):
    IKE = "ike"
    MANUAL = "manual"  # RFC 4301 4.5: SPIs and keys from a secrets file


# Defaults (sane and secure; proposals parsed once by the loader).
DEFAULT_IKE_PROPOSALS_V2 = (
    "aes128gcm16-prfsha256-ecp256",
    "aes256gcm16-prfsha384-ecp384",
    "aes128-sha256-modp2048",
)
DEFAULT_IKE_PROPOSALS_V1 = ("aes128-sha256-modp2048", "aes256-sha256-modp3072")
DEFAULT_ESP_PROPOSALS = ("aes128gcm16", "aes256gcm16", "aes128-sha256")
DEFAULT_AH_PROPOSALS = ("sha256",)
DEFAULT_IKE_LIFETIME = 4 * 3600
DEFAULT_DPD = 30
DEFAULT_LIFETIME = 3600
DEFAULT_REPLAY_WINDOW = 64  # RFC 4303 3.4.3
MIN_REPLAY_WINDOW = 32
MAX_REPLAY_WINDOW = 4096


@dataclass(frozen=True)
class Peer:
    """A host this one talks IPsec with (one IKE SA, when IKE is used)."""

    name: str
    address: IPAddress
    auth: Auth | None  # None: no IKE with this peer, only manually keyed flows
    ike_version: int = 2
    ikev1_mode: IkeV1Mode | None = None  # IKEv1 only (MAIN by default)
    psk_file: str | None = None  # resolved against the policy file's directory
    psk: Secret | None = field(default=None, repr=False)  # loaded when secrets are read
    cert: str | None = None  # own certificate for this peer (else from hostsec.toml)
    key: str | None = None  # its private key (a secrets file)
    local_id: str | None = None
    remote_id: str | None = None
    local_address: IPAddress | None = None  # source address to use on a multi-homed host
    ike_proposals: tuple[Proposal, ...] = ()
    ike_lifetime: int = DEFAULT_IKE_LIFETIME  # seconds
    dpd: int | None = DEFAULT_DPD  # seconds; None: off
    encapsulation: Encapsulation = Encapsulation.AUTO
    allow_insecure: bool = False
    source: Location = field(default=Location("<none>"), compare=False)
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return dict(self.lines).get(key, self.source.line)


@dataclass(frozen=True)
class Flow:
    """Traffic between this host and a peer that must be protected, and how."""

    name: str
    peer: str
    protocol: int | None = None  # IP protocol number; None: any
    local_port: PortRange | None = None  # None: any
    remote_port: PortRange | None = None
    protection: Protection = Protection.ESP
    mode: Mode = Mode.TRANSPORT
    keying: Keying = Keying.IKE
    esp_proposals: tuple[Proposal, ...] = ()  # empty unless ESP with IKE keying
    ah_proposals: tuple[Proposal, ...] = ()  # empty unless AH with IKE keying
    lifetime: int | None = DEFAULT_LIFETIME  # seconds; None for manual keying (no rekey)
    idle_timeout: int | None = None  # seconds; None: off
    # Volume lifetimes of each CHILD SA (hard; rekeyed before, at 80-90 %); None: off.
    lifetime_bytes: int | None = None
    lifetime_packets: int | None = None
    start: Start = Start.TRAP
    require: bool = True  # fail closed: plaintext of this flow is dropped both ways
    manual_keys: str | None = None  # path of the secrets file (keying = "manual")
    manual: ManualKeyFile | None = field(default=None, repr=False)  # its SAs, when read
    replay_window: int = DEFAULT_REPLAY_WINDOW
    source: Location = field(default=Location("<none>"), compare=False)
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return dict(self.lines).get(key, self.source.line)

    @property
    def pfs(self) -> bool:
        """True when every ESP/AH proposal names a DH group (a fresh DH per CHILD_SA)."""
        props = self.esp_proposals + self.ah_proposals
        return bool(props) and all(p.dh for p in props)
