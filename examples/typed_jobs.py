"""Typed jobs: models in, a model out, and a type checker that knows both.

``@durably.job(name, input=Order, output=Receipt)`` makes ``checkout`` a
``Job[Order, Receipt]``: ``checkout.trigger`` takes an ``Order``, and the runs
it returns are ``Run[Receipt]``, so ``run.output`` is a ``Receipt`` (once the
run has completed) for mypy and pyright as well as at runtime. A test runs
this file and checks it with ``mypy --strict``.
"""

from __future__ import annotations

import os
from decimal import Decimal

from pydantic import BaseModel
from typing_extensions import assert_type

from durably import Durably, StepContext

durably = Durably(os.environ.get("DURABLY_DATABASE_URL", "sqlite:///typed-demo.db"))


class Order(BaseModel):
    id: str
    prices: list[Decimal]


class Receipt(BaseModel):
    order_id: str
    total: Decimal


@durably.job("checkout", input=Order, output=Receipt)
def checkout(step: StepContext, order: Order) -> dict[str, object]:
    total = step.run("add-up", lambda: sum(order.prices, Decimal(0)))
    # A dict of the output model's fields: durably converts it to a Receipt.
    return {"order_id": order.id, "total": total}


def main() -> Receipt:
    durably.migrate()
    run = checkout.trigger(Order(id="A-17", prices=[Decimal("9.90"), Decimal("0.10")]))
    durably.process_until_idle()
    done = checkout.get_run(run.id)
    assert done is not None
    receipt = done.output
    assert_type(receipt, Receipt | None)
    assert receipt is not None
    return receipt


if __name__ == "__main__":
    print(main())
    durably.close()
