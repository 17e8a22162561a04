// Drives @tursodatabase/serverless (Turso's fetch-based client; it speaks /v3/pipeline and
// /v3/cursor) against the server at $HRANA_URL, through its own API and its libSQL-compatible
// one (@tursodatabase/serverless/compat). Usage: node serverless.mjs
// Env: HRANA_URL, HRANA_TOKEN (optional), HRANA_EXPIRY_MS (the server's --stream-expiry),
// SCENARIOS (optional, comma-separated subset). Prints {scenario: outcome} as JSON.
import { connect } from "@tursodatabase/serverless";
import { createClient } from "@tursodatabase/serverless/compat";
import { outcome, runAll, sleep } from "./common.mjs";

const url = process.env.HRANA_URL;
const authToken = process.env.HRANA_TOKEN || undefined;
const expiryMs = Number(process.env.HRANA_EXPIRY_MS || "1000");

const db = () => connect({ url, authToken });

async function count(conn, where) {
    return Number((await conn.get(`SELECT count(*) AS n FROM ${where}`)).n);
}

const scenarios = {
    // exec() sends a `sequence` request
    async schema() {
        const conn = db();
        await conn.exec(`
            CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, n ANY);
            CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
            CREATE TABLE tx(k TEXT PRIMARY KEY);
        `);
        const tables = await conn.all("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
        await conn.close();
        return tables;
    },

    async values_positional() {
        const conn = db();
        conn.defaultSafeIntegers(true);
        const run = await conn.run("INSERT INTO vals(i, f, s, b, n) VALUES (?, ?, ?, ?, ?)", [
            9007199254740993n, 1.5, "héllo ☃", new Uint8Array([0, 1, 254, 255]), null,
        ]);
        const row = await conn.get(
            "SELECT id, i, f, s, b, n, typeof(i) AS ti, typeof(f) AS tf, typeof(b) AS tb FROM vals WHERE id = ?",
            [run.lastInsertRowid],
        );
        return { run, row };
    },

    async values_named() {
        const conn = db();
        conn.defaultSafeIntegers(true);
        return await conn.get("SELECT :a AS a, @b AS b, $c AS c, :d AS d", {
            a: -9223372036854775808n, b: "x", c: null, d: 0.25,
        });
    },

    async values_edge_integers() {
        const conn = db();
        conn.defaultSafeIntegers(true);
        return await conn.get("SELECT ? AS hi, ? AS lo, 9223372036854775807 AS lit", [
            9223372036854775807n, -9223372036854775808n,
        ]);
    },

    // prepare() sends a `describe` request and reads column metadata from it
    async prepare_describe() {
        const conn = db();
        const stmt = await conn.prepare("SELECT k, v FROM kv WHERE v > ?");
        const columns = stmt.columns();
        await conn.run("INSERT INTO kv VALUES ('p1', 1), ('p2', 2)");
        const all = await stmt.all([1]);
        const raw = await stmt.raw().all([0]);
        return { columns, reader: stmt.reader, all, raw };
    },

    async prepare_describe_error() {
        const conn = db();
        return await outcome(conn.prepare("SELECT * FROM missing_table"));
    },

    async result_shapes() {
        const conn = db();
        const insert = await conn.run("INSERT INTO kv VALUES ('a', 1), ('b', 2), ('c', 3)");
        const update = await conn.run("UPDATE kv SET v = v + 10 WHERE v >= 2 AND k IN ('a', 'b', 'c')");
        const del = await conn.run("DELETE FROM kv WHERE k = 'c'");
        return { insert, update, del };
    },

    async batch_plain() {
        const conn = db();
        const results = await conn.batch([
            { sql: "INSERT INTO kv VALUES (?, ?)", args: ["bp1", 1] },
            { sql: "INSERT INTO kv VALUES (:k, :v)", args: { k: "bp2", v: 2 } },
            "SELECT k, v FROM kv WHERE k LIKE 'bp%' ORDER BY k",
        ]);
        return results.map((r) => ({ columns: r.columns, rows: r.rows, rowsAffected: r.rowsAffected }));
    },

    // without a mode, a failing step leaves the earlier ones committed
    async batch_plain_error() {
        const conn = db();
        const failed = await outcome(conn.batch(["INSERT INTO kv VALUES ('bpe', 1)", "INSERT INTO kv VALUES ('bpe', 2)"]));
        return { failed, stored: await count(conn, "kv WHERE k = 'bpe'") };
    },

    // with a mode, the batch is atomic: BEGIN … COMMIT, ROLLBACK on failure (batch conditions)
    async batch_atomic_error() {
        const conn = db();
        const failed = await outcome(
            conn.batch(["INSERT INTO kv VALUES ('bae1', 1)", "INSERT INTO kv VALUES ('bae1', 2)", "INSERT INTO kv VALUES ('bae3', 3)"], "immediate"),
        );
        return { failed, stored: await count(conn, "kv WHERE k LIKE 'bae%'"), inTransaction: conn.inTransaction };
    },

    async batch_atomic_ok() {
        const conn = db();
        const results = await conn.batch(["INSERT INTO kv VALUES ('bao', 1)", "SELECT v FROM kv WHERE k = 'bao'"], "deferred");
        return { rows: results.map((r) => r.rows), inTransaction: conn.inTransaction };
    },

    async transaction_commit() {
        const conn = db();
        const other = db();
        let inside, outsideBefore;
        const tx = conn.transactionAsync(async (t) => {
            await t.run("INSERT INTO tx VALUES (?)", ["w1"]);
            inside = await t.all("SELECT k FROM tx WHERE k = 'w1'");
            outsideBefore = await count(other, "tx WHERE k = 'w1'");
        });
        await tx.immediate();
        return { inside, outsideBefore, outsideAfter: await count(other, "tx WHERE k = 'w1'") };
    },

    async transaction_rollback_on_throw() {
        const conn = db();
        const tx = conn.transactionAsync(async (t) => {
            await t.run("INSERT INTO tx VALUES ('r1')");
            throw new Error("give up");
        });
        const thrown = await outcome(tx.deferred());
        return { thrown, stored: await count(conn, "tx WHERE k = 'r1'") };
    },

    // a raw BEGIN on the connection's own stream: get_autocommit tracks it
    async raw_begin_in_transaction() {
        const conn = db();
        await conn.exec("BEGIN");
        const during = conn.inTransaction;
        await conn.run("INSERT INTO tx VALUES ('rb1')");
        await conn.exec("ROLLBACK");
        return { during, after: conn.inTransaction, stored: await count(conn, "tx WHERE k = 'rb1'") };
    },

    async errors() {
        const conn = db();
        return {
            syntax: await outcome(conn.run("SELEC 1")),
            no_table: await outcome(conn.all("SELECT * FROM missing_table")),
            unique: await outcome(conn.run("INSERT INTO kv VALUES ('a', 1)")),
            many: await outcome(conn.run("SELECT 1; SELECT 2")),
            missing_arg: await outcome(conn.run("SELECT ?, ?", [1])),
            unsupported: await outcome(conn.run("VACUUM")),
            sequence: await outcome(conn.exec("INSERT INTO kv VALUES ('s1', 1); INSERT INTO kv VALUES ('a', 1)")),
            after_errors: await conn.get("SELECT count(*) AS n FROM kv WHERE k = 's1'"),
        };
    },

    // the connection keeps its stream (baton) between calls; an idle stream expires
    async stream_expiry() {
        const conn = db();
        await conn.exec("BEGIN IMMEDIATE");
        await conn.run("INSERT INTO tx VALUES ('x1')");
        await sleep(expiryMs * 2 + 500);
        const after = await outcome(conn.run("INSERT INTO tx VALUES ('x2')"));
        const inTransaction = conn.inTransaction;
        const next = await outcome(conn.get("SELECT count(*) AS n FROM tx WHERE k IN ('x1', 'x2')"));
        return { after, inTransaction, next };
    },

    async stream_expiry_pipeline() {
        const conn = db();
        await conn.exec("BEGIN");
        await sleep(expiryMs * 2 + 500);
        const after = await outcome(conn.exec("INSERT INTO tx VALUES ('xp')"));
        const next = await outcome(conn.exec("SELECT 1"));
        return { after, next };
    },

    async close_then_use() {
        const conn = db();
        await conn.run("SELECT 1");
        await conn.close();
        return await outcome(conn.run("SELECT 1"));
    },

    async compat_client() {
        const client = createClient({ url, authToken });
        const rs = await client.execute({ sql: "SELECT ? AS a, ? AS b", args: [9007199254740991, 2] });
        // the compat layer sends named arguments as positional ones (Object.values), and sqld
        // binds `:name` parameters by name only: they are refused
        const named = await outcome(client.execute({ sql: "SELECT :a AS a", args: { a: 1 } }));
        const batch = await client.batch(["INSERT INTO kv VALUES ('cc', 1)", "SELECT v FROM kv WHERE k = 'cc'"], "write");
        const tx = await client.transaction("write");
        await tx.execute("INSERT INTO tx VALUES ('cc1')");
        await tx.rollback();
        const readTx = await client.transaction("read");
        const readWrite = await outcome(readTx.execute("INSERT INTO tx VALUES ('cc2')"));
        await readTx.commit();
        return {
            execute: { columns: rs.columns, rows: rs.rows.map((r) => [r[0], r[1]]) },
            named,
            batch: batch.map((r) => r.rows),
            rolledBack: await count(db(), "tx WHERE k = 'cc1'"),
            readWrite: readWrite.error ?? "ok",
            readStored: await count(db(), "tx WHERE k = 'cc2'"),
        };
    },

    async auth_rejected() {
        const conn = connect({ url, authToken: "wrong-token" });
        return { run: await outcome(conn.run("SELECT 1")), exec: await outcome(conn.exec("SELECT 1")) };
    },
};

await runAll(scenarios);
