"""Plain Python, no Socket.IO: the handlers call it."""

PRICES = {"apple": 3, "pear": 4}


def add_item(cart, item, qty):
    cart[item] = cart.get(item, 0) + qty
    return total(cart)


def total(cart):
    return sum(PRICES.get(item, 0) * qty for item, qty in cart.items())
