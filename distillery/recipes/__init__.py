"""The synthesis recipes: each recipe's model (its UI form) and its pure logic; the flows in flows/ run them."""
