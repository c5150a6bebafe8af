"""The three services: ``frontend`` → ``orders`` → ``inventory``, Flask apps, the two behind
``frontend`` each with its own SQLite database.

Faults are switched at run time by ``POST /_fault`` (JSON ``{"kind": ..., ...}``, see
:class:`Fault`) and act in the service's own code: a lookup that misses (``keyerror``), a SQL
function that sleeps inside the statement (``slow_sql``), a handler that sleeps before it
answers (``slow_http``). Every service takes every fault; only the one it concerns acts on it.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

FAULT_KINDS = ("off", "keyerror", "slow_sql", "slow_http")
ITEMS = 20
ORDERS = 50
# what frontend and orders allow a call downstream
CALL_TIMEOUT = 10.0


@dataclass
class Fault:
    """The fault a service is in: ``kind`` (one of FAULT_KINDS), the share of requests a
    ``keyerror`` hits, the milliseconds ``slow_sql`` and ``slow_http`` add."""

    kind: str = "off"
    share: float = 0.4
    ms: int = 200


class FaultSwitch:
    """The current :class:`Fault`, shared by the request threads."""

    def __init__(self, seed: int = 0) -> None:
        self._fault = Fault()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def set(self, document: dict[str, Any]) -> Fault:
        kind = document.get("kind", "off")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULT_KINDS)}")
        fault = Fault(kind, float(document.get("share", 0.4)), int(document.get("ms", 200)))
        with self._lock:
            self._fault = fault
        return fault

    def get(self) -> Fault:
        with self._lock:
            return self._fault

    def hits(self, kind: str) -> bool:
        """Whether this request is one that fault ``kind`` (if on) hits."""
        fault = self.get()
        if fault.kind != kind:
            return False
        with self._lock:
            return self._rng.random() < fault.share

    def sleep_ms(self, kind: str) -> int:
        fault = self.get()
        return fault.ms if fault.kind == kind else 0


def _control(app: Flask, faults: FaultSwitch) -> None:
    @app.post("/_fault")
    def set_fault() -> ResponseReturnValue:
        try:
            fault = faults.set(request.get_json(force=True))
        except (TypeError, ValueError) as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(kind=fault.kind, share=fault.share, ms=fault.ms)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")


# --- inventory -------------------------------------------------------------------------------

# Where each warehouse ships from. Under the keyerror fault stock rows are read with a
# warehouse code that this table does not know, as after a bad data migration.
REGIONS = {"ber": "eu-central", "dub": "eu-west", "iad": "us-east"}


def seed_inventory(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        # WAL: a slow read (the slow_sql fault) does not hold up the writers
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE stock (item_id INTEGER PRIMARY KEY, warehouse TEXT, quantity INTEGER)"
        )
        codes = sorted(REGIONS)
        conn.executemany(
            "INSERT INTO stock VALUES (?, ?, ?)",
            [(i, codes[i % len(codes)], 1_000_000) for i in range(1, ITEMS + 1)],
        )


def inventory_app(db: Path, faults: FaultSwitch) -> Flask:
    app = Flask("inventory")
    _control(app, faults)

    def pause(ms: int) -> int:
        # the slow_sql fault: a SQL function, so the time is spent inside the statement and
        # the database span is the slow one. Only the stock read calls it: a write that slow
        # would queue every other write behind SQLite's one write lock, and the fault would
        # turn into timeouts
        if ms:
            time.sleep(ms / 1000)
        return 0

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, timeout=10)
        conn.create_function("pause", 1, pause)
        return conn

    def region(warehouse: str) -> str:
        if faults.hits("keyerror"):
            warehouse = warehouse.upper()
        return REGIONS[warehouse]

    @app.get("/stock/<int:item_id>")
    def stock(item_id: int) -> ResponseReturnValue:
        conn = connect()
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT quantity, warehouse FROM stock WHERE item_id = ? AND pause(?) = 0",
                (item_id, faults.sleep_ms("slow_sql")),
            )
            row = cursor.fetchone()
        finally:
            conn.close()
        if row is None:
            abort(404)
        quantity, warehouse = row
        return jsonify(item_id=item_id, quantity=quantity, region=region(warehouse))

    @app.post("/reserve")
    def reserve() -> ResponseReturnValue:
        body = request.get_json(force=True)
        item_id, quantity = int(body["item_id"]), int(body["quantity"])
        conn = connect()
        try:
            cursor = conn.cursor()
            cursor.execute(
                "UPDATE stock SET quantity = quantity - ? WHERE item_id = ? AND quantity >= ?",
                (quantity, item_id, quantity),
            )
            if cursor.rowcount == 0:
                conn.rollback()
                return jsonify(error="out of stock"), 409
            cursor.execute("SELECT warehouse FROM stock WHERE item_id = ?", (item_id,))
            (warehouse,) = cursor.fetchone()
            shipping_from = region(warehouse)
            conn.commit()
        finally:
            conn.close()
        return jsonify(item_id=item_id, reserved=quantity, region=shipping_from)

    return app


# --- orders ----------------------------------------------------------------------------------


def seed_orders(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER, "
            "quantity INTEGER, status TEXT)"
        )
        conn.executemany(
            "INSERT INTO orders (item_id, quantity, status) VALUES (?, ?, ?)",
            [(1 + i % ITEMS, 1 + i % 3, "open" if i % 4 else "shipped") for i in range(ORDERS)],
        )


def orders_app(db: Path, inventory: str, faults: FaultSwitch) -> Flask:
    app = Flask("orders")
    _control(app, faults)

    def slow() -> None:
        ms = faults.sleep_ms("slow_http")
        if ms:
            time.sleep(ms / 1000)

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> ResponseReturnValue:
        slow()
        conn = sqlite3.connect(db, timeout=10)
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT id, item_id, quantity, status FROM orders WHERE id = ?", (order_id,)
            )
            row = cursor.fetchone()
        finally:
            conn.close()
        if row is None:
            abort(404)
        _, item_id, quantity, status = row
        stock = requests.get(f"{inventory}/stock/{item_id}", timeout=CALL_TIMEOUT)
        stock.raise_for_status()
        return jsonify(
            id=order_id,
            item_id=item_id,
            quantity=quantity,
            status=status,
            in_stock=stock.json()["quantity"] >= quantity,
        )

    @app.get("/orders")
    def list_orders() -> ResponseReturnValue:
        slow()
        status = request.args.get("status", "open")
        limit = min(int(request.args.get("limit", "10")), 100)
        conn = sqlite3.connect(db, timeout=10)
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT id, item_id, quantity FROM orders WHERE status = ? "
                "ORDER BY id DESC LIMIT ?",
                (status, limit),
            )
            rows = cursor.fetchall()
        finally:
            conn.close()
        return jsonify(orders=[{"id": r[0], "item_id": r[1], "quantity": r[2]} for r in rows])

    @app.post("/orders")
    def create_order() -> ResponseReturnValue:
        slow()
        body = request.get_json(force=True)
        item_id, quantity = int(body["item_id"]), int(body["quantity"])
        reserved = requests.post(
            f"{inventory}/reserve",
            json={"item_id": item_id, "quantity": quantity},
            timeout=CALL_TIMEOUT,
        )
        if reserved.status_code == 409:
            return jsonify(error="out of stock"), 409
        reserved.raise_for_status()
        conn = sqlite3.connect(db, timeout=10)
        try:
            cursor = conn.cursor()
            cursor.execute(
                "INSERT INTO orders (item_id, quantity, status) VALUES (?, ?, ?)",
                (item_id, quantity, "open"),
            )
            order_id = cursor.lastrowid
            conn.commit()
        finally:
            conn.close()
        return jsonify(id=order_id, item_id=item_id, quantity=quantity), 201

    return app


# --- frontend --------------------------------------------------------------------------------


def frontend_app(orders: str, faults: FaultSwitch) -> Flask:
    app = Flask("frontend")
    _control(app, faults)

    def relay(response: requests.Response) -> ResponseReturnValue:
        if response.status_code in (404, 409):
            error = "not found" if response.status_code == 404 else "out of stock"
            return jsonify(error=error), response.status_code
        response.raise_for_status()
        return jsonify(response.json()), response.status_code

    @app.get("/order/<int:order_id>")
    def show_order(order_id: int) -> ResponseReturnValue:
        return relay(requests.get(f"{orders}/orders/{order_id}", timeout=CALL_TIMEOUT))

    @app.get("/orders")
    def list_orders() -> ResponseReturnValue:
        status = request.args.get("status", "open")
        return relay(
            requests.get(
                f"{orders}/orders",
                params={"status": status, "limit": "10"},
                timeout=CALL_TIMEOUT,
            )
        )

    @app.post("/order")
    def place_order() -> ResponseReturnValue:
        body = request.get_json(force=True)
        return relay(requests.post(f"{orders}/orders", json=body, timeout=CALL_TIMEOUT))

    return app
