"""Control flow and other operators lastlayer does not run.

WHILE, IF and CALL_ONCE are refused: no classifier or extractor needs them, and a loop whose condition
never turns false (a constant ``true``) hangs ``invoke`` forever. Operators that still name subgraphs
(in options of any type) must name existing ones, and never recursively.
"""

from __future__ import annotations

from lastlayer.model.validate.common import ModelContext
from lastlayer.model.validate.tables import SUBGRAPH_OPTIONS

CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "CALL")


class ControlFlowChecks(ModelContext):
    """Mixed into the checker: the subgraph call graph, and the refusal of unknown operators."""

    def refuse_operator(self, where: tuple, name: str) -> None:
        if name in CONTROL_FLOW:
            self.fail(where, f"control flow ({name}) is not supported: image classifiers and extractors have none")
        self.fail(where, f"operator {name} is not one lastlayer runs (it runs image classifiers and extractors)")

    def check_calls(self) -> None:
        """Control-flow operators name subgraphs: in range, and never (directly or not) their own."""
        calls: dict[int, set[int]] = {}
        for number, graph in enumerate(self.subgraphs):
            for op in graph.operators or []:
                for field in SUBGRAPH_OPTIONS:
                    for options in (op.builtinOptions, op.builtinOptions2):
                        if options is not None and hasattr(options, field):
                            target = int(getattr(options, field))
                            if not 0 <= target < len(self.subgraphs):
                                self.fail(f"subgraph {number}", f"an operator calls subgraph {target}, out of range ({len(self.subgraphs)} subgraphs)")
                            calls.setdefault(number, set()).add(target)
        state: dict[int, int] = {}

        def visit(node: int) -> None:
            state[node] = 1
            for target in calls.get(node, ()):
                if state.get(target) == 1:
                    self.fail(f"subgraph {node}", f"calls subgraph {target} recursively")
                if target not in state:
                    visit(target)
            state[node] = 2

        for node in list(calls):
            if node not in state:
                visit(node)

    # ----------------------------------------------------------------- one subgraph
