"""The promotion gate: a challenger model version replaces the champion only when every registered check passes.

Each capability registers its own check with `@gate_check(name)`: the feedback work (better on held-out verdicts
by a paired test, no original test split worse by more than a point, alert precision not lower), the fairness work
(no identity group's gap widened: models/bias.py). A check reads what it needs from the two models' cards and
profiles (models/profile.py) and from `evidence` (verdicts, evaluation results the caller gathered), and returns a
`CheckResult` whose `reason` is one line a person can act on. A check that lacks its evidence fails with the reason
(a gate that passes for want of data is no gate).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str  # one line: why it passed or failed, with the numbers
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    champion: str
    challenger: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def reasons(self) -> list[str]:
        """The failed checks' reasons (what a refusal says), or every reason when it passed."""
        failed = [f"{r.name}: {r.reason}" for r in self.results if not r.passed]
        return failed or [f"{r.name}: {r.reason}" for r in self.results]


#: check name → fn(champion_dir, challenger_dir, evidence) -> CheckResult
Check = Callable[[Path, Path, dict], CheckResult]
CHECKS: dict[str, Check] = {}


def gate_check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn
    return register


def run_gate(champion_dir: Path, challenger_dir: Path, evidence: dict | None = None,
             only: list[str] | None = None) -> GateResult:
    """Every registered check (or those named in `only`) on the pair; a check that raises fails with its error."""
    from streamsense.models.registry import read_card

    evidence = evidence or {}
    results = []
    for name, fn in CHECKS.items():
        if only is not None and name not in only:
            continue
        try:
            results.append(fn(Path(champion_dir), Path(challenger_dir), evidence))
        except Exception as exc:  # a broken check refuses: promotion needs every check to say yes
            results.append(CheckResult(name, False, f"the check failed: {type(exc).__name__}: {exc}"))

    def ref(path: Path) -> str:
        card = read_card(path)
        return f"{card.get('name')}:{card.get('version')}"
    return GateResult(ref(Path(champion_dir)), ref(Path(challenger_dir)), results)


#: Modules that register checks with @gate_check, imported by `load_checks` (a module not installed is left out).
CHECK_MODULES = ("streamsense.streams.feedback.gate_checks", "streamsense.models.bias",
                 "streamsense.streams.drift.promotion")


def load_checks() -> dict[str, Check]:
    """Import every module in CHECK_MODULES so their checks are registered; returns the registered checks."""
    import importlib

    for module in CHECK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module is there but something it imports is not: that is a failure
                raise
    return CHECKS


def promote(root: Path, name: str, version: int, evidence: dict | None = None, by: str | None = None,
            only: list[str] | None = None) -> GateResult:
    """Run the gate between the champion of `name` and `version`; only when it passes, point `champion` at
    `version` (and drop `challenger` if it named it). The worker picks the move up on its next reload (SIGHUP)
    where STREAMSENSE_MODEL names `name:champion`."""
    from streamsense.models.registry import CHALLENGER, CHAMPION, alias_version, read_aliases, resolve, set_alias

    load_checks()
    champion = alias_version(root, name, CHAMPION)
    if champion == version:
        raise ValueError(f"{name}:{version} is the champion already")
    result = run_gate(resolve(root, f"{name}:{champion}"), resolve(root, f"{name}:{version}"), evidence, only)
    if result.passed:
        set_alias(root, name, CHAMPION, version, "promote", by, "; ".join(result.reasons()))
        if read_aliases(root, name)["aliases"].get(CHALLENGER) == version:
            set_alias(root, name, CHALLENGER, None, "promote", by, f"promoted to {CHAMPION}")
    return result


# The checks register themselves on import: import their modules here, so every caller of run_gate has them.
import streamsense.models.bias  # noqa: E402,F401  the `bias` check
