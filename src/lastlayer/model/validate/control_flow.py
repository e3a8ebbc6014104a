"""Control flow: operators that call subgraphs must name existing ones, and never recursively."""

from __future__ import annotations

from lastlayer.model.validate.common import ModelContext
from lastlayer.model.validate.tables import SUBGRAPH_OPTIONS


class ControlFlowChecks(ModelContext):
    """Mixed into the checker: the subgraph call graph."""

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
