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
