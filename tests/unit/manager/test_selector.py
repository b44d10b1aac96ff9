from decimal import Decimal as D

from bai.manager.services.scheduler import AgentCapacity, ConcentratedSelector


def agent(name: str, cpu: int, used: int) -> AgentCapacity:
    return AgentCapacity(name, f"http://{name}", {"cpu": D(cpu), "mem": D(8 * 2**30)}, {"cpu": D(used)})


def test_concentrated_picks_busiest_that_fits() -> None:
    agents = [agent("a", 8, 1), agent("b", 8, 6), agent("c", 8, 7)]
    picked = ConcentratedSelector().pick(agents, {"cpu": D(2), "mem": D(2**30)})
    assert picked is not None and picked.id == "b"   # c has only 1 free core


def test_nothing_fits() -> None:
    assert ConcentratedSelector().pick([agent("a", 2, 2)], {"cpu": D(1)}) is None


def test_unknown_slot_never_fits() -> None:
    assert ConcentratedSelector().pick([agent("a", 8, 0)], {"cuda.device": D(1)}) is None
