"""No import cycle anywhere in flsilo and its kits, counting the imports made inside functions.

A cycle hidden in a function-level import still ties two modules into one unit: neither can
be read, tested or moved without the other. import-linter's contracts check named layers;
this checks every module pair. Imports under ``if TYPE_CHECKING:`` never run and are not
counted.
"""

from __future__ import annotations

import grimp

PACKAGES = ("flsilo", "site_kit", "hub_kit", "sim_kit")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm, iterative)."""
    imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in imports:
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            module, i = work.pop()
            if i == 0:
                order[module] = low[module] = len(order)
                stack.append(module)
                on_stack.add(module)
            targets = imports.get(module, [])
            if i < len(targets):
                work.append((module, i + 1))
                target = targets[i]
                if target not in order:
                    work.append((target, 0))
                elif target in on_stack:
                    low[module] = min(low[module], order[target])
                continue
            if work:  # finished module: its caller takes its lowest link
                caller = work[-1][0]
                low[caller] = min(low[caller], low[module])
            if low[module] == order[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def _described(graph: grimp.ImportGraph, group: list[str]) -> str:
    lines = []
    for importer in group:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported in group:
                details = graph.get_import_details(importer=importer, imported=imported)
                at = ", ".join(f"line {d['line_number']}" for d in details)
                lines.append(f"  {importer} -> {imported} ({at})")
    return "\n".join(lines)


def test_no_module_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph(
        *PACKAGES, include_external_packages=False, exclude_type_checking_imports=True
    )
    assert len(graph.modules) > 100  # the whole tree was read
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move the shared piece into a module both import):\n" + (
        "\n".join(_described(graph, group) for group in cycles)
    )


def test_the_cycle_finder_finds_a_cycle_through_several_modules() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    graph.add_import(importer="p.d", imported="p.e", line_number=1, line_contents="")
    graph.add_import(importer="p.e", imported="p.d", line_number=3, line_contents="")
    assert sorted(import_cycles(graph)) == [["p.a", "p.b", "p.c"], ["p.d", "p.e"]]
    assert "p.e -> p.d (line 3)" in _described(graph, ["p.d", "p.e"])
