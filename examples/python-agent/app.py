"""A Python agent: the `agent` world of `wit/`, built into a component by componentize-py.

The root task (any input not starting with `child:`) asks the language model for a
plan, stores it with the granted `kv` tool, spawns itself as a child with the input
`child: <topic>` and waits for it, saves a checkpoint, and answers with the plan and
the child's output. The child asks the model one question and reads the plan back from
`kv`; it spawns nothing. Every step goes into the reasoning trace.

Build and run (README, "Python agents"):

    componentize-py -d wit -w agent componentize app -p examples/python-agent -o app.wasm
    agentflow run app.wasm --config examples/python-agent/agentflow.toml --grant kv --input "tide pools"
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import checkpoint, llm, tasks, tools, trace

CHILD_PREFIX = "child: "


def ask(system: str, user: str, task_type: str) -> str:
    """One language-model call; the host picks the model and records the reply."""
    request = llm.Request(
        messages=[
            llm.Message(role=llm.Role.SYSTEM, content=system, tool_call_id=None),
            llm.Message(role=llm.Role.USER, content=user, tool_call_id=None),
        ],
        model=None,
        temperature=None,
        max_output_tokens=128,
        priority=llm.Priority.COST,
        capabilities=[],
        min_context_window=None,
        task_type=task_type,
        tools=[],
        allow_fallback=True,
        max_cost_usd=None,
        max_latency_ms=None,
        max_wait_ms=None,
        min_quality=None,
    )
    try:
        return llm.complete(request).text
    except Err as e:
        raise Err(f"llm call failed: {e.value}")


def kv(op: str, key: str, value: str | None = None) -> str:
    """One call of the granted `kv` tool; its JSON answer."""
    args = {"op": op, "key": key}
    if value is not None:
        args["value"] = value
    try:
        return tools.call("kv", json.dumps(args))
    except Err as e:
        raise Err(f"kv {op} {key} failed: {e.value}")


def spawn_child(topic: str) -> int:
    """Spawn this same component on `child: <topic>`; its task id."""
    request = tasks.SpawnRequest(
        description=f"check the plan for {topic}",
        agent=tasks.AgentRef_Same(),
        input=CHILD_PREFIX + topic,
        dedup_key=None,
        budget_usd=None,
        depends_on=[],
        resources=[],
        sequence=None,
        fail_fast=False,
        timeout_ms=None,
        estimated_cost_usd=None,
        tools=["kv"],
        validators=[],
        memory_mb=None,
        cpu_ms=None,
        decomposition_reasoning="a second opinion is a separate task",
    )
    try:
        return tasks.spawn(request)
    except Err as e:
        raise Err(f"spawn failed: {e.value}")


def run_child(topic: str) -> str:
    plan = json.loads(kv("get", "plan"))
    if plan is None:
        raise Err("the parent stored no plan under `plan`")
    opinion = ask(
        "You review plans. Answer with one sentence.",
        f"Is this a good plan for {topic}? {plan}",
        "review",
    )
    trace.step(f"review the plan for {topic}", "llm:review", opinion, 0.7)
    return opinion


def run_root(topic: str) -> str:
    previous = checkpoint.load()
    if previous is not None:
        trace.log(trace.Level.INFO, f"a checkpoint exists: {previous.note}")
    plan = ask(
        "You plan research. Answer with one short sentence.",
        f"Plan a short study of {topic}.",
        "plan",
    )
    trace.step(f"plan a study of {topic}", "llm:plan", plan, 0.8)
    stored = kv("put", "plan", plan)
    trace.step("keep the plan for the child", "tool:kv put plan", stored, 0.9)

    child = spawn_child(topic)
    outcome = tasks.wait(child)
    if isinstance(outcome, tasks.Outcome_Completed):
        review = outcome.value
    elif isinstance(outcome, tasks.Outcome_Failed):
        raise Err(f"child {child} failed: {outcome.value}")
    else:
        raise Err(f"child {child} did not complete: {type(outcome).__name__}")
    trace.step(f"wait for child {child}", "tasks:wait", review, 0.8)

    state = json.dumps({"topic": topic, "plan": plan, "review": review}).encode()
    saved = checkpoint.save(state, "planned and reviewed")
    trace.step("save the plan and its review", "checkpoint", f"checkpoint {saved}", 1.0)
    return json.dumps({"topic": topic, "plan": plan, "review": review, "child": child})


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        if input.startswith(CHILD_PREFIX):
            return run_child(input[len(CHILD_PREFIX):])
        topic = input.strip() or "WebAssembly agents"
        return run_root(topic)
