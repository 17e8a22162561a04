// Drives the real @coji/durably-react hooks against a durably.web server.
// Usage: node drive.mjs <api base URL>. Prints one JSON line of what it saw;
// exits 1 (with the reason on stderr) when the client did not behave.
import { createInterface } from "node:readline";
import { EventSource } from "eventsource";
import React from "react";
import TestRenderer from "react-test-renderer";
import { createDurably } from "@coji/durably-react";

globalThis.EventSource = EventSource; // a browser has it; Node 20 does not
const api = process.argv[2];
const durably = createDurably({ api });
let hooks = null;

function Probe() {
  hooks = {
    greet: durably.greet.useJob(),
    gated: durably.gated.useJob(),
    runs: durably.useRuns({ jobName: "greet", pageSize: 5 }),
    actions: durably.useRunActions(),
  };
  return null;
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function nextLine() {
  return (await lines.next()).value;
}

async function until(what, test, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (hooks && test(hooks)) return;
    if (Date.now() > deadline) {
      const runs = hooks ? hooks.runs.runs.map((run) => [run.id, run.status]) : null;
      throw new Error(`timed out waiting for ${what}; useRuns had ${JSON.stringify(runs)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function main() {
  const renderer = TestRenderer.create(React.createElement(Probe));
  const seen = {};
  try {
    await until("the first render", () => true);
    // useJob: trigger, then follow the run over /subscribe to its end
    const { runId } = await hooks.greet.trigger({ name: "react" });
    await until("greet to complete", (h) => h.greet.isCompleted);
    seen.greet = {
      runId,
      status: hooks.greet.status,
      output: hooks.greet.output,
      progress: hooks.greet.progress,
      logs: hooks.greet.logs.map((log) => [log.level, log.message, log.data]),
      currentRunId: hooks.greet.currentRunId,
    };

    // useRuns: its page (GET /runs with limit and offset); the run may have ended
    // before the list's stream was open, so read the page once more
    await hooks.runs.refresh();
    await until("the run in useRuns", (h) =>
      h.runs.runs.some((run) => run.id === runId && run.status === "completed"),
    );
    seen.listed = hooks.runs.runs.map((run) => [run.id, run.status, run.isTerminal]);

    // useRunActions
    const actions = hooks.actions;
    seen.getRun = (await actions.getRun(runId)).status;
    seen.getMissing = await actions.getRun("no-such-run");
    seen.steps = (await actions.getSteps(runId)).map((step) => [step.name, step.status]);
    // by now the list follows /runs/subscribe: the new run appears, and completes, live
    const newId = await actions.retrigger(runId);
    await until("the retriggered run in useRuns", (h) =>
      h.runs.runs.some((run) => run.id === newId && run.status === "completed"),
    );
    seen.retriggered = newId !== runId;
    try {
      await actions.cancel(runId);
      seen.cancelCompleted = "accepted";
    } catch (error) {
      seen.cancelCompleted = error.message;
    }

    // cancel and delete a running run
    const gated = await hooks.gated.trigger({});
    await until("gated to be leased", (h) => h.gated.isLeased);
    await actions.cancel(gated.runId);
    await until("gated to be cancelled", (h) => h.gated.isCancelled);
    await actions.deleteRun(gated.runId);
    seen.deleted = await actions.getRun(gated.runId);

    // triggerAndWait
    seen.waited = await hooks.greet.triggerAndWait({ name: "again" });

    // live progress and logs: the test opens the gate once told the run is leased
    const open = await hooks.gated.trigger({});
    await until("gated to be leased again", (h) => h.gated.isLeased && h.gated.currentRunId === open.runId);
    console.log(JSON.stringify({ leased: open.runId }));
    await nextLine();
    await until("gated to complete", (h) => h.gated.isCompleted);
    seen.gated = {
      output: hooks.gated.output,
      progress: hooks.gated.progress,
      logs: hooks.gated.logs.map((log) => [log.level, log.message, log.data]),
    };
  } finally {
    renderer.unmount();
  }
  console.log(JSON.stringify(seen));
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error.stack || String(error));
    process.exit(1);
  },
);
