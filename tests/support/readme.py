"""The README's runnable blocks: each fenced ```sh block of a section that follows a marker
comment `<!-- deploy: NAME -->`, `<!-- deploy: NAME (service) -->`, `<!-- deploy: NAME
(reload SERVICE) -->` or `<!-- deploy: NAME (yours) -->`, in the order they appear, so a test
can run the commands exactly as a reader would copy them."""

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_MARKED = re.compile(r"<!-- (?P<tag>[a-z-]+): (?P<name>[a-z0-9-]+)(?: \((?P<kind>[a-z -]+)\))? -->"
                     r"\n```sh\n(?P<text>.*?)\n```\n", re.S)
_VARIABLE = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.M)


@dataclass(frozen=True)
class Block:
    name: str
    kind: str      # run, service, reload or yours
    target: str    # the service a reload block reloads
    text: str


def section(title: str, path: Path = README) -> str:
    """The text of one `## title` section (up to the next `## `)."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def blocks(title: str, tag: str, path: Path = README) -> list[Block]:
    """The marked sh blocks of a section; a marker without its block right below is an error,
    so a reflowed README cannot silently drop a step."""
    text = section(title, path)
    found = []
    for m in _MARKED.finditer(text):
        if m["tag"] != tag:
            continue
        kind, _, target = (m["kind"] or "run").partition(" ")
        found.append(Block(m["name"], kind, target, m["text"]))
    markers = text.count(f"<!-- {tag}: ")
    if markers != len(found):
        raise ValueError(f"{markers} '{tag}' markers in ## {title}, but {len(found)} are right "
                         "above a ```sh block")
    return found


def variables(block: Block) -> set[str]:
    """The names a settings block assigns (NAME=... at the start of a line)."""
    return set(_VARIABLE.findall(block.text))
