// Shared by the conformance scripts: run named scenarios against a server and print one JSON
// object {scenario: outcome} on stdout, for tests/hrana/test_conformance_*.py to assert on.
//
// An outcome is whatever the scenario returns, or {"error": {...}} with the error the client
// raised (its class name, code and message, as the client surfaces them to a user).

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// JSON cannot carry bigints or bytes: tag them so the Python side sees exactly what came back.
export function plain(value) {
    if (typeof value === "bigint") return { bigint: value.toString() };
    if (value instanceof ArrayBuffer) return { blob_hex: Buffer.from(value).toString("hex") };
    if (ArrayBuffer.isView(value)) {
        return { blob_hex: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
    }
    if (Array.isArray(value)) return value.map(plain);
    if (value !== null && typeof value === "object") {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
    }
    if (typeof value === "number" && !Number.isFinite(value)) return { number: String(value) };
    return value;
}

export function describeError(err) {
    const out = { name: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
    if (err?.code !== undefined) out.code = err.code;
    if (err?.statementIndex !== undefined) out.statementIndex = err.statementIndex;
    if (err?.cause?.constructor?.name) out.cause = err.cause.constructor.name;
    return out;
}

// Runs `scenarios` ({name: async () => result}) one after the other, each isolated from the
// others' failures, then prints the outcomes.
export async function runAll(scenarios) {
    const only = process.env.SCENARIOS ? process.env.SCENARIOS.split(",") : null;
    const results = {};
    for (const [name, scenario] of Object.entries(scenarios)) {
        if (only && !only.includes(name)) continue;
        try {
            results[name] = plain(await scenario());
        } catch (err) {
            results[name] = { error: describeError(err) };
        }
    }
    process.stdout.write(JSON.stringify(results) + "\n");
}

// Awaits `promise` and returns {error} instead of throwing: for steps whose failure is the point.
export async function outcome(promise) {
    try {
        return { ok: plain((await promise) ?? null) };
    } catch (err) {
        return { error: describeError(err) };
    }
}
