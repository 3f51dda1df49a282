"""A small inventory module: real Python with classes and functions, for the code splitter test."""

from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    quantity: int = 0
    tags: list[str] = field(default_factory=list)

    def restock(self, amount: int) -> None:
        """Add ``amount`` units; negative amounts are refused."""
        if amount < 0:
            raise ValueError("amount must be positive")
        self.quantity += amount


class Inventory:
    """Items by name."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        self.items[item.name] = item

    def total(self) -> int:
        return sum(i.quantity for i in self.items.values())

    def low_stock(self, threshold: int = 5) -> list[str]:
        return sorted(n for n, i in self.items.items() if i.quantity < threshold)


def load_inventory(rows: list[tuple[str, int]]) -> Inventory:
    inventory = Inventory()
    for name, quantity in rows:
        inventory.add(Item(name, quantity))
    return inventory


def report(inventory: Inventory) -> str:
    lines = [f"{name}: {item.quantity}" for name, item in sorted(inventory.items.items())]
    lines.append(f"total: {inventory.total()}")
    return "\n".join(lines)
