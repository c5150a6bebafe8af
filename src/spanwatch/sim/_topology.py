"""A microservice topology to simulate: services, their operations, and who calls whom."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Dependency:
    """Something a service calls that is not instrumented itself: a database, cache, queue."""

    name: str  # peer.service / server.address
    kind: str  # "db", "cache", "queue", "http"
    system: str  # db.system / messaging.system ("postgresql", "redis", "kafka", ...)
    operation: str  # db.operation.name or the span name
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Call:
    """One call from an operation: to another service's operation, or to a dependency."""

    service: str = ""
    operation: str = ""
    dependency: Dependency | None = None
    probability: float = 1.0  # how often the call happens per request


@dataclass(frozen=True, slots=True)
class Operation:
    service: str
    name: str  # the span name; may contain ids the detector must template away
    latency_ms: float  # median self time
    calls: tuple[Call, ...] = ()
    protocol: str = "http"  # "http", "grpc" or "consumer"
    route: str = ""  # http.route, when it differs from the name


@dataclass(frozen=True, slots=True)
class Entry:
    """A way traffic enters the system, with its share of requests."""

    service: str
    operation: str
    weight: float


@dataclass(slots=True)
class Topology:
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    def add(self, op: Operation) -> None:
        self.operations[(op.service, op.name)] = op

    def op(self, service: str, name: str) -> Operation:
        return self.operations[(service, name)]

    @property
    def services(self) -> list[str]:
        return sorted({s for s, _ in self.operations})


POSTGRES = Dependency("orders-db", "db", "postgresql", "SELECT", 4.0)
POSTGRES_WRITE = Dependency("orders-db", "db", "postgresql", "INSERT", 6.0)
REDIS = Dependency("session-cache", "cache", "redis", "GET", 0.8)
INVENTORY_DB = Dependency("inventory-db", "db", "mysql", "SELECT", 3.0)
KAFKA = Dependency("orders-topic", "queue", "kafka", "publish", 1.5)
PSP = Dependency("psp.example.com", "http", "", "POST", 40.0)


def shop() -> Topology:
    """An online shop: a frontend, eight services, two databases, a cache, a queue, a PSP."""
    t = Topology()
    t.add(
        Operation(
            "frontend",
            "GET /",
            3.0,
            (
                Call("catalog", "GET /api/products"),
                Call("cart", "GET /api/cart/{id}", probability=0.6),
            ),
        )
    )
    t.add(
        Operation(
            "frontend",
            "GET /product/{id}",
            2.5,
            (
                Call("catalog", "GET /api/products/{id}"),
                Call("recommend", "/Recommend/List"),
            ),
        )
    )
    t.add(Operation("frontend", "POST /checkout", 4.0, (Call("checkout", "/Checkout/PlaceOrder"),)))
    t.add(Operation("catalog", "GET /api/products", 5.0, (Call(dependency=POSTGRES),)))
    t.add(
        Operation(
            "catalog",
            "GET /api/products/{id}",
            2.0,
            (
                Call(dependency=REDIS),
                Call(dependency=POSTGRES, probability=0.3),
            ),
        )
    )
    t.add(
        Operation(
            "recommend",
            "/Recommend/List",
            8.0,
            (Call("catalog", "GET /api/products"),),
            protocol="grpc",
        )
    )
    t.add(Operation("cart", "GET /api/cart/{id}", 1.5, (Call(dependency=REDIS),)))
    t.add(
        Operation(
            "checkout",
            "/Checkout/PlaceOrder",
            6.0,
            (
                Call("cart", "GET /api/cart/{id}"),
                Call("inventory", "/Inventory/Reserve"),
                Call("payments", "POST /v1/charges"),
                Call(dependency=POSTGRES_WRITE),
                Call(dependency=KAFKA),
            ),
            protocol="grpc",
        )
    )
    t.add(
        Operation(
            "inventory",
            "/Inventory/Reserve",
            3.0,
            (Call(dependency=INVENTORY_DB),),
            protocol="grpc",
        )
    )
    t.add(Operation("payments", "POST /v1/charges", 5.0, (Call(dependency=PSP),)))
    t.add(Operation("email", "orders-topic process", 12.0, (), protocol="consumer"))
    t.entries = [
        Entry("frontend", "GET /", 0.45),
        Entry("frontend", "GET /product/{id}", 0.40),
        Entry("frontend", "POST /checkout", 0.15),
    ]
    return t


LEDGER_DB = Dependency("ledger-db", "db", "postgresql", "UPDATE", 5.0)
SEARCH_DB = Dependency("search-index", "db", "elasticsearch", "search", 12.0)
TAX_API = Dependency("tax.example.net", "http", "", "GET", 25.0)


def chain() -> Topology:
    """A deep synchronous chain (edge -> gateway -> api -> orders -> pricing -> tax -> ledger),
    with a rarely used admin path and a health check: keys from hundreds of spans a window
    down to one or two."""
    t = Topology()
    t.add(Operation("edge", "GET /v2/quote", 1.0, (Call("gateway", "/Gateway/Route"),)))
    t.add(Operation("edge", "GET /healthz", 0.3, ()))
    t.add(Operation("edge", "POST /admin/reindex", 2.0, (Call("search", "POST /reindex"),)))
    t.add(Operation("gateway", "/Gateway/Route", 1.5, (Call("api", "GET /quote"),), "grpc"))
    t.add(Operation("api", "GET /quote", 2.0, (Call("orders", "/Orders/Price"),)))
    t.add(Operation("orders", "/Orders/Price", 3.0, (Call("pricing", "POST /price"),), "grpc"))
    t.add(
        Operation(
            "pricing",
            "POST /price",
            4.0,
            (Call("tax", "/Tax/Compute"), Call(dependency=TAX_API, probability=0.2)),
        )
    )
    t.add(Operation("tax", "/Tax/Compute", 2.5, (Call("ledger", "POST /entries"),), "grpc"))
    t.add(Operation("ledger", "POST /entries", 2.0, (Call(dependency=LEDGER_DB),)))
    t.add(Operation("search", "POST /reindex", 30.0, (Call(dependency=SEARCH_DB),)))
    t.entries = [
        Entry("edge", "GET /v2/quote", 0.895),
        Entry("edge", "GET /healthz", 0.10),
        Entry("edge", "POST /admin/reindex", 0.005),  # about one a window
    ]
    return t


EVENTS_TOPIC = Dependency("events-topic", "queue", "kafka", "publish", 1.0)
RAW_STORE = Dependency("raw-store", "db", "cassandra", "INSERT", 3.0)
GEO_CACHE = Dependency("geo-cache", "cache", "redis", "GET", 0.5)
WAREHOUSE = Dependency("warehouse", "db", "clickhouse", "INSERT", 40.0)


def fanout() -> Topology:
    """A fan-out system with a queue and a batch job: an API takes events, stores them and
    publishes them; three consumers (enrich, index, notify) take each one; a nightly-style
    batch loader runs rarely and writes in bulk."""
    t = Topology()
    t.add(
        Operation(
            "collector-api",
            "POST /v1/events",
            1.5,
            (Call("ingest", "/Ingest/Accept"),),
        )
    )
    t.add(
        Operation(
            "ingest",
            "/Ingest/Accept",
            2.0,
            (Call(dependency=RAW_STORE), Call(dependency=EVENTS_TOPIC)),
            "grpc",
        )
    )
    t.add(
        Operation(
            "enricher",
            "events-topic process",
            4.0,
            (Call("geo", "GET /lookup"),),
            "consumer",
        )
    )
    t.add(Operation("geo", "GET /lookup", 1.0, (Call(dependency=GEO_CACHE),)))
    t.add(Operation("indexer", "events-topic process", 6.0, (), "consumer"))
    t.add(Operation("notifier", "events-topic process", 2.0, (), "consumer"))
    t.add(Operation("collector-api", "GET /v1/status", 0.5, ()))
    t.add(
        Operation(
            "batch-loader",
            "load-partition",
            60.0,
            (Call(dependency=WAREHOUSE), Call(dependency=WAREHOUSE), Call(dependency=WAREHOUSE)),
            "consumer",
        )
    )
    t.entries = [
        Entry("collector-api", "POST /v1/events", 0.85),
        Entry("collector-api", "GET /v1/status", 0.12),
        Entry("batch-loader", "load-partition", 0.03),
    ]
    return t


TOPOLOGIES = {"shop": shop, "chain": chain, "fanout": fanout}
