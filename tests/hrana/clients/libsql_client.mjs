// Drives @libsql/client (the TypeScript libSQL client; over HTTP it speaks Hrana on
// /v2/pipeline) against the server at $HRANA_URL. Usage: node libsql_client.mjs
// Env: HRANA_URL, HRANA_TOKEN (optional), HRANA_EXPIRY_MS (the server's --stream-expiry),
// SCENARIOS (optional, comma-separated subset). Prints {scenario: outcome} as JSON.
import { createClient } from "@libsql/client";
import { outcome, runAll, sleep } from "./common.mjs";

const url = process.env.HRANA_URL;
const authToken = process.env.HRANA_TOKEN || undefined;
const expiryMs = Number(process.env.HRANA_EXPIRY_MS || "1000");

const client = (options = {}) => createClient({ url, authToken, ...options });
const rows = (rs) => rs.rows.map((row) => rs.columns.map((_, i) => row[i]));
const shape = (rs) => ({
    columns: rs.columns,
    columnTypes: rs.columnTypes,
    rows: rows(rs),
    rowsAffected: rs.rowsAffected,
    lastInsertRowid: rs.lastInsertRowid,
});

async function count(db, table) {
    return Number((await db.execute(`SELECT count(*) FROM ${table}`)).rows[0][0]);
}

const scenarios = {
    // executeMultiple sends a `sequence` request
    async schema() {
        const db = client();
        await db.executeMultiple(`
            CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, n ANY);
            CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
            CREATE TABLE tx(k TEXT PRIMARY KEY);
        `);
        const rs = await db.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
        return rows(rs);
    },

    async values_positional() {
        const db = client({ intMode: "bigint" });
        const inserted = await db.execute({
            sql: "INSERT INTO vals(i, f, s, b, n) VALUES (?, ?, ?, ?, ?)",
            args: [9007199254740993n, 1.5, "héllo ☃", new Uint8Array([0, 1, 254, 255]), null],
        });
        const read = await db.execute({
            sql: "SELECT id, i, f, s, b, n, typeof(i), typeof(f), typeof(b), typeof(n) FROM vals WHERE id = ?",
            args: [inserted.lastInsertRowid],
        });
        return { insert: shape(inserted), select: shape(read) };
    },

    async values_named() {
        const db = client({ intMode: "bigint" });
        const rs = await db.execute({
            sql: "SELECT :a AS a, @b AS b, $c AS c, :d AS d, :e AS e, typeof(:e) AS te",
            args: { a: -9223372036854775808n, b: "x", c: null, d: 0.25, e: 7 },
        });
        return shape(rs);
    },

    async values_edge_integers() {
        const db = client({ intMode: "bigint" });
        const rs = await db.execute({
            sql: "SELECT ?, ?, ?, 9223372036854775807, -9223372036854775808",
            args: [9223372036854775807n, -9223372036854775808n, 0n],
        });
        return rows(rs);
    },

    // in the default "number" mode, an integer beyond 2^53 cannot be represented
    async values_number_mode_overflow() {
        const db = client();
        return await outcome(db.execute("SELECT 9007199254740993"));
    },

    async values_empty_blob_and_text() {
        const db = client();
        const rs = await db.execute({ sql: "SELECT ?, ?, typeof(?), length(?)", args: [new Uint8Array(0), "", new Uint8Array(0), ""] });
        return rows(rs);
    },

    async result_shapes() {
        const db = client({ intMode: "bigint" });
        await db.execute("INSERT INTO kv VALUES ('a', 1), ('b', 2), ('c', 3)");
        const update = await db.execute("UPDATE kv SET v = v + 10 WHERE v >= 2");
        const del = await db.execute("DELETE FROM kv WHERE k = 'c'");
        const select = await db.execute("SELECT k, v FROM kv ORDER BY k");
        return { update: shape(update), delete: shape(del), select: shape(select) };
    },

    async batch_write() {
        const db = client();
        const results = await db.batch(
            [
                { sql: "INSERT INTO kv VALUES (?, ?)", args: ["bw1", 1] },
                { sql: "INSERT INTO kv VALUES (:k, :v)", args: { k: "bw2", v: 2 } },
                "SELECT k, v FROM kv WHERE k LIKE 'bw%' ORDER BY k",
            ],
            "write",
        );
        return results.map(shape);
    },

    // a failing step rolls back the whole batch
    async batch_error_rolls_back() {
        const db = client();
        const before = await count(db, "kv");
        const failed = await outcome(
            db.batch(
                [
                    { sql: "INSERT INTO kv VALUES (?, ?)", args: ["be1", 1] },
                    { sql: "INSERT INTO kv VALUES (?, ?)", args: ["be1", 2] },
                    { sql: "INSERT INTO kv VALUES (?, ?)", args: ["be3", 3] },
                ],
                "write",
            ),
        );
        return { failed, before, after: await count(db, "kv") };
    },

    async batch_deferred_and_read() {
        const db = client();
        const deferred = await db.batch(["INSERT INTO kv VALUES ('bd', 1)", "SELECT v FROM kv WHERE k = 'bd'"], "deferred");
        const read = await db.batch(["SELECT count(*) FROM kv WHERE k = 'bd'"], "read");
        return { deferred: deferred.map(rows), read: read.map(rows) };
    },

    // transaction("read") sends BEGIN TRANSACTION READONLY
    async batch_read_with_write() {
        const db = client();
        const result = await outcome(db.batch(["INSERT INTO kv VALUES ('br', 1)"], "read"));
        return { result, stored: await count(db, "kv WHERE k = 'br'") };
    },

    async transaction_write_commit() {
        const db = client();
        const other = client();
        const tx = await db.transaction("write");
        await tx.execute({ sql: "INSERT INTO tx VALUES (?)", args: ["w1"] });
        const inside = rows(await tx.execute("SELECT k FROM tx WHERE k = 'w1'"));
        const outsideBefore = await count(other, "tx WHERE k = 'w1'");
        await tx.commit();
        return { inside, outsideBefore, outsideAfter: await count(other, "tx WHERE k = 'w1'"), closed: tx.closed };
    },

    async transaction_rollback() {
        const db = client();
        const tx = await db.transaction("write");
        await tx.batch([
            { sql: "INSERT INTO tx VALUES (?)", args: ["r1"] },
            { sql: "INSERT INTO tx VALUES (?)", args: ["r2"] },
        ]);
        const inside = await tx.execute("SELECT count(*) FROM tx WHERE k IN ('r1', 'r2')");
        await tx.rollback();
        return { inside: rows(inside), after: await count(db, "tx WHERE k IN ('r1', 'r2')"), closed: tx.closed };
    },

    // a statement error inside a transaction does not end it
    async transaction_error_keeps_transaction() {
        const db = client();
        const tx = await db.transaction("write");
        await tx.execute("INSERT INTO tx VALUES ('e1')");
        const failed = await outcome(tx.execute("INSERT INTO tx VALUES ('e1')"));
        await tx.execute("INSERT INTO tx VALUES ('e2')");
        await tx.commit();
        return { failed, after: await count(db, "tx WHERE k IN ('e1', 'e2')") };
    },

    async transaction_read() {
        const db = client();
        const tx = await db.transaction("read");
        const read = rows(await tx.execute("SELECT count(*) FROM tx"));
        const write = await outcome(tx.execute("INSERT INTO tx VALUES ('ro1')"));
        await tx.commit();
        return { read, write, stored: await count(db, "tx WHERE k = 'ro1'") };
    },

    async transaction_deferred() {
        const db = client();
        const tx = await db.transaction("deferred");
        await tx.execute("INSERT INTO tx VALUES ('d1')");
        await tx.commit();
        return { stored: await count(db, "tx WHERE k = 'd1'") };
    },

    async transaction_execute_multiple() {
        const db = client();
        const tx = await db.transaction("write");
        await tx.executeMultiple("INSERT INTO tx VALUES ('m1'); INSERT INTO tx VALUES ('m2');");
        await tx.rollback();
        return { stored: await count(db, "tx WHERE k IN ('m1', 'm2')") };
    },

    // its SQL cache keeps at most 30 texts per stream (store_sql), evicting with close_sql;
    // a text of 5000 bytes or more is sent inline
    async transaction_sql_cache() {
        const db = client();
        const tx = await db.transaction("write");
        const values = [];
        for (let i = 0; i < 35; i++) {
            values.push(rows(await tx.execute(`SELECT ${i} AS n`))[0][0]);
        }
        values.push(rows(await tx.execute("SELECT 0 AS n"))[0][0]);
        const long = `SELECT '${"x".repeat(6000)}' AS s`;
        const longLength = rows(await tx.execute(long))[0][0].length;
        await tx.commit();
        return { values, longLength };
    },

    async transaction_closed_use() {
        const db = client();
        const tx = await db.transaction("write");
        await tx.execute("SELECT 1");
        await tx.commit();
        return await outcome(tx.execute("SELECT 1"));
    },

    async errors() {
        const db = client();
        return {
            syntax: await outcome(db.execute("SELEC 1")),
            no_table: await outcome(db.execute("SELECT * FROM missing_table")),
            unique: await outcome(db.execute("INSERT INTO kv VALUES ('a', 1)")),
            not_null: await outcome(db.execute("INSERT INTO kv VALUES ('nn', NULL)")),
            many: await outcome(db.execute("SELECT 1; SELECT 2")),
            empty: await outcome(db.execute("  ")),
            missing_arg: await outcome(db.execute({ sql: "SELECT ?, ?", args: [1] })),
            unsupported: await outcome(db.execute("VACUUM")),
            runtime: await outcome(db.execute("SELECT abs(-9223372036854775808)")),
        };
    },

    async batch_error_step_index() {
        const db = client();
        return await outcome(db.batch(["SELECT 1", "SELECT * FROM missing_table", "SELECT 3"], "read"));
    },

    async migrate() {
        const db = client();
        const results = await db.migrate(["CREATE TABLE mig(a)", "INSERT INTO mig VALUES (1)"]);
        const fk = rows(await db.execute("PRAGMA foreign_keys"));
        return { results: results.map((rs) => rs.rowsAffected), rows: await count(db, "mig"), fk };
    },

    // the server rolls an idle stream back; the client reports STREAM_EXPIRED
    async stream_expiry() {
        const db = client();
        const tx = await db.transaction("write");
        await tx.execute("INSERT INTO tx VALUES ('x1')");
        await sleep(expiryMs * 2 + 500);
        const after = await outcome(tx.execute("SELECT count(*) FROM tx"));
        const again = await outcome(tx.execute("SELECT 1"));
        const fresh = await count(client(), "tx WHERE k = 'x1'");
        return { after, again, closed: tx.closed, fresh };
    },

    async auth_rejected() {
        const db = createClient({ url, authToken: "wrong-token" });
        return await outcome(db.execute("SELECT 1"));
    },

    async auth_accepted() {
        return rows(await client().execute("SELECT 1"));
    },

    async auth_missing() {
        const db = createClient({ url });
        return await outcome(db.execute("SELECT 1"));
    },
};

await runAll(scenarios);
