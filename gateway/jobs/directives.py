"""The ``#SBATCH`` block of a batch script, read as sbatch reads it, and merged into the job's spec.

sbatch takes options from ``#SBATCH`` (and ``#SLURM``) lines up to the first line that is neither a comment
nor blank; later ones are plain comments. Lines end at a newline only. Each line holds options in sbatch's
own forms: ``--opt=value``, ``--opt value``, ``-X value``, ``-Xvalue``; a ``#`` after white space starts a
comment. Wherever sbatch and this reader could see a line differently (single quotes, which sbatch does not
group by; other schedulers' directives, which sbatch reads too; heterogeneous job components), the line is
refused, never guessed at: reading further than sbatch, or refusing more, costs a person a clear 422, while
reading less would let a script run unpriced.

What a directive may do, by kind:

- mean a spec field (time, nodes, tasks and cores, memory, GPUs, name): it fills the field when the request
  left it unset, and contradicting a field the request set is refused naming both;
- belong to the gateway (account, QoS, reservation, a partition other than the request's, user, export,
  output paths, working directory): refused naming the directive;
- change nothing that is priced (mail, signals, open mode): passed on in the script, harmless;
- anything else (arrays, exclusive, constraints, dependencies, ...): refused naming it, so that nothing in
  the script can make the site run more than was priced. The connectors pass every priced resource
  explicitly besides: sbatch's command line wins over the script's directives.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidJob

# name → (short form, takes a value)
_OPTIONS: dict[str, tuple[str | None, bool]] = {
    "time": ("t", True),
    "nodes": ("N", True),
    "ntasks": ("n", True),
    "cpus-per-task": ("c", True),
    "ntasks-per-node": (None, True),
    "mem": (None, True),
    "mem-per-cpu": (None, True),
    "gpus": ("G", True),
    "gpus-per-node": (None, True),
    "gres": (None, True),
    "job-name": ("J", True),
    "partition": ("p", True),
    "account": ("A", True),
    "qos": ("q", True),
    "reservation": (None, True),
    "uid": (None, True),
    "gid": (None, True),
    "export": (None, True),
    "output": ("o", True),
    "error": ("e", True),
    "input": ("i", True),
    "chdir": ("D", True),
    "array": ("a", True),
    "exclusive": (None, False),
    "mail-type": (None, True),
    "mail-user": (None, True),
    "signal": (None, True),
    "open-mode": (None, True),
}
_SHORT = {short: name for name, (short, _) in _OPTIONS.items() if short}
_MAGIC = ("#SBATCH", "#SLURM")
_FOREIGN = ("#PBS", "#BSUB", "#$", "#@", "#MSUB")
HARMLESS = frozenset({"mail-type", "mail-user", "signal", "open-mode"})
GATEWAY_OWNED = frozenset(
    {"account", "qos", "reservation", "uid", "gid", "export", "output", "error", "input", "chdir"}
)
SPEC_FIELDS = frozenset(
    {"time", "nodes", "ntasks", "cpus-per-task", "ntasks-per-node", "mem", "mem-per-cpu", "gpus", "gpus-per-node"}
    | {"gres", "job-name"}
)
_GPU_KEYS = ("gpus", "gpus-per-node")
_MEMORY = re.compile(r"^(?P<n>\d+)(?P<u>[KMGT]?)B?$", re.IGNORECASE)
_MB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_GPU_GRES = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?:(?P<n>\d+)$")


@dataclass(frozen=True)
class Directive:
    name: str  # the long option name
    value: str | None
    text: str  # as written, for messages

    def refuse(self, why: str, field: str = "script") -> InvalidJob:
        return InvalidJob(f"#SBATCH {self.text} in the script: {why}", field=field, directive=self.text)


def read_directives(script: str) -> list[Directive]:
    """The ``#SBATCH`` options before the script's first command, in order."""
    found: list[Directive] = []
    for line in script.split("\n")[1:]:  # the first line is the interpreter (#!)
        stripped = "".join(line.split())  # any white space at all, as the shell would skip it
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break  # the first command: sbatch reads no further
        magic = next((m for m in _MAGIC if line.startswith(m)), None)
        if magic is None:
            if line.lstrip().upper().startswith(_FOREIGN):
                raise InvalidJob(
                    f"{line.strip()[:80]!r} in the script: sbatch reads other schedulers' directives too; "
                    "write #SBATCH lines instead",
                    field="script",
                )
            continue
        rest = line[len(magic) :]
        if "'" in rest or "\r" in rest or any(word in rest.lower() for word in ("hetjob", "packjob")):
            raise InvalidJob(
                f"{line.strip()[:80]!r} in the script: use double quotes, and one job per script",
                field="script",
            )
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as exc:
            raise InvalidJob(f"{line.strip()[:80]!r} in the script cannot be read: {exc}", field="script") from exc
        found.extend(_options(words))
    return found


def _options(words: list[str]) -> list[Directive]:
    out = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("--"):
            name, sep, value = word[2:].partition("=")
            takes = _OPTIONS.get(name, (None, True))[1]
            if takes and not sep:
                if index >= len(words):
                    raise InvalidJob(f"#SBATCH {word}: the option needs a value", field="script", directive=word)
                value, index = words[index], index + 1
            out.append(Directive(name, value if takes else None, word if sep or not takes else f"{word} {value}"))
        elif word.startswith("-") and len(word) >= 2:
            name = _SHORT.get(word[1], f"-{word[1]}")
            value = word[2:]
            if not value:
                if index >= len(words):
                    raise InvalidJob(f"#SBATCH {word}: the option needs a value", field="script", directive=word)
                value, index = words[index], index + 1
            out.append(Directive(name, value, f"{word[:2]} {value}"))
        else:
            raise InvalidJob(f"#SBATCH {word}: not an option", field="script", directive=word)
    return out


def merge_directives(given: dict[str, Any], directives: list[Directive], *, partition: str) -> dict[str, Any]:
    """The spec's fields with the directives' filled in. ``given`` holds the fields the request set."""
    asked = _accepted(directives, partition=partition)
    merged = dict(given)
    for field, (value, directive) in _spec_fields(asked, given).items():
        if field in given and not _same(field, given[field], value):
            raise InvalidJob(
                f"#SBATCH {directive.text} conflicts with {field}={given[field]!r} in the request; "
                "give it in one place",
                field=field,
                directive=directive.text,
            )
        merged.setdefault(field, value)
    return merged


def _accepted(directives: list[Directive], *, partition: str) -> dict[str, Directive]:
    """The directives that mean spec fields, by option (the last of each wins, as in sbatch); refuses the rest."""
    asked: dict[str, Directive] = {}
    for directive in directives:
        name = directive.name
        if name == "partition":
            if directive.value != partition:
                raise directive.refuse(f"the partition is the request's ({partition})", field="partition")
        elif name in GATEWAY_OWNED:
            raise directive.refuse("the gateway sets this itself; remove the line")
        elif name == "array":
            raise directive.refuse("job arrays are not supported yet: submit each task as its own job")
        elif name not in SPEC_FIELDS and name not in HARMLESS:
            raise directive.refuse("not an option the gateway accepts in a script")
        elif name in SPEC_FIELDS:
            key = "gpus-per-node" if name == "gres" else name
            if key in _GPU_KEYS and any(k in asked and k != key for k in _GPU_KEYS):
                raise directive.refuse("GPUs may be asked for in one way only (--gpus, --gpus-per-node or --gres)")
            asked[key] = directive
    return asked


def _spec_fields(asked: dict[str, Directive], given: dict[str, Any]) -> dict[str, tuple[Any, Directive]]:
    """Spec field → (value, the directive it comes from)."""
    found: dict[str, tuple[Any, Directive]] = {}
    if "time" in asked:
        found["time_limit"] = (asked["time"].value, asked["time"])
    if "job-name" in asked:
        found["name"] = (asked["job-name"].value, asked["job-name"])
    if "nodes" in asked:
        found["nodes"] = (_count(asked["nodes"]), asked["nodes"])
    nodes = found["nodes"][0] if "nodes" in found else given.get("nodes", 1)
    layout = [asked[k] for k in ("ntasks", "ntasks-per-node", "cpus-per-task") if k in asked]
    if layout:
        tasks = _count(asked["ntasks"]) if "ntasks" in asked else None
        if tasks is None:
            tasks = _count(asked["ntasks-per-node"]) * nodes if "ntasks-per-node" in asked else nodes
        per_task = _count(asked["cpus-per-task"]) if "cpus-per-task" in asked else 1
        found["cores"] = (tasks * per_task, layout[0])
    if "gpus" in asked:
        found["gpus"] = (_count(asked["gpus"]), asked["gpus"])
    elif "gpus-per-node" in asked:
        found["gpus"] = (_gpus_per_node(asked["gpus-per-node"]) * nodes, asked["gpus-per-node"])
    if "mem" in asked:
        found["memory_gb"] = (math.ceil(_megabytes(asked["mem"]) * nodes / 1024), asked["mem"])
    elif "mem-per-cpu" in asked:
        cores = found["cores"][0] if "cores" in found else (given.get("cores") or nodes)
        found["memory_gb"] = (math.ceil(_megabytes(asked["mem-per-cpu"]) * cores / 1024), asked["mem-per-cpu"])
    return found


def _same(field: str, given: Any, value: Any) -> bool:
    if field == "time_limit":
        from gateway.jobs.spec import minutes_of

        try:
            return minutes_of(given) == minutes_of(value)
        except ValueError:
            return False
    return bool(given == value)


def _count(directive: Directive) -> int:
    value = directive.value or ""
    if not value.isdigit() or int(value) < 1:
        raise directive.refuse("give a whole number (ranges such as 2-4 are not accepted)")
    return int(value)


def _megabytes(directive: Directive) -> float:
    match = _MEMORY.match(directive.value or "")
    if match is None or int(match.group("n")) == 0:  # 0 means "all of the node's memory" to Slurm
        raise directive.refuse("give a size such as 4000M or 8G")
    return int(match.group("n")) * _MB[match.group("u").upper()]


def _gpus_per_node(directive: Directive) -> int:
    value = directive.value or ""
    if directive.name == "gres":
        match = _GPU_GRES.match(value)
        if match is None:
            raise directive.refuse("only GPUs (gpu:N or gpu:TYPE:N) may be asked for")
        value = match.group("n")
    if not value.isdigit():
        raise directive.refuse("give a whole number of GPUs per node")
    return int(value)
