"""Job input and output models (``@durably.job(name, input=Model, output=Model)``), on both
engines and every driver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from durably import Durably, RunStatus, StepContext, TriggerItem, ValidationError

pytestmark = pytest.mark.both_engines


class Order(pydantic.BaseModel):
    id: int
    total: Decimal


class Receipt(pydantic.BaseModel):
    order_id: int
    paid: bool


@dataclass
class Invoice:
    number: int
    due: date


def _billing(durably: Durably, seen: list[Any]) -> Any:
    @durably.job("bill", input=Order, output=Receipt)
    def bill(step: StepContext, order: Order) -> Any:
        seen.append(order)
        return {"order_id": order.id, "paid": step.run("charge", lambda: True)}

    return bill


def test_a_pydantic_input_and_output_are_checked_and_converted(durably: Durably) -> None:
    seen: list[Any] = []
    bill = _billing(durably, seen)

    run = bill.trigger({"id": 7, "total": "9.90"})  # data the model accepts
    assert run.input == Order(id=7, total=Decimal("9.90"))
    assert durably.process_until_idle() == 1
    assert seen == [Order(id=7, total=Decimal("9.90"))]
    done = durably.get_run(run.id)
    assert done is not None
    assert done.output == Receipt(order_id=7, paid=True)


def test_a_dataclass_input_is_built_from_a_dict_of_its_fields(durably: Durably) -> None:
    @durably.job("remind", input=Invoice)
    def remind(step: StepContext, invoice: Invoice) -> int:
        assert isinstance(invoice, Invoice)
        return invoice.number

    run = remind.trigger({"number": 3, "due": date(2027, 1, 31)})
    assert durably.process_until_idle() == 1
    assert durably.wait_for_run(run.id, timeout=10).output == 3
    assert remind.trigger(Invoice(4, date(2027, 2, 1))).input == Invoice(4, date(2027, 2, 1))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"id": "seven", "total": 1}, "does not fit Order"),
        (["not", "a", "dict"], "does not fit Order"),
    ],
)
def test_an_input_that_does_not_fit_is_refused_and_nothing_stored(
    durably: Durably, bad: Any, reason: str
) -> None:
    bill = _billing(durably, [])
    with pytest.raises(ValidationError, match=f"^The input of job 'bill' {reason}"):
        bill.trigger(bad)
    with pytest.raises(ValidationError, match=r"(?s)does not fit Order.*\(at index 1\)"):
        bill.batch_trigger([{"id": 1, "total": 1}, TriggerItem(bad)])
    assert durably.get_runs() == []


def test_an_output_that_does_not_fit_fails_the_run(durably: Durably) -> None:
    @durably.job("half", output=Receipt)
    def half(step: StepContext, _input: None) -> Any:
        return {"order_id": 1}  # "paid" is missing

    run = half.trigger(None)
    assert durably.process_until_idle() == 1
    failed = durably.get_run(run.id)
    assert failed is not None
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("The job's output does not fit Receipt")


def test_a_run_stored_before_its_job_had_a_model_gets_an_instance(
    make_durably: Callable[..., Durably],
) -> None:
    before = make_durably()
    before.job("bill")(lambda step, order: None)
    run = before.get_job("bill").trigger({"id": 5, "total": "1.00"})  # type: ignore[union-attr]
    assert run.input == {"id": 5, "total": "1.00"}

    seen: list[Any] = []
    after = make_durably()
    _billing(after, seen)
    assert after.process_until_idle() == 1
    assert seen == [Order(id=5, total=Decimal("1.00"))]


@pytest.mark.parametrize("model", [int, dict, "Order", Order(id=1, total=Decimal(1))])
def test_a_model_must_be_a_pydantic_model_class_or_a_dataclass(
    durably: Durably, model: Any
) -> None:
    with pytest.raises(ValidationError, match="must be a pydantic model class or a dataclass"):
        durably.job("x", input=model)
    with pytest.raises(ValidationError, match="A job's output model must be"):
        durably.job("x", output=model)
