"""The shipping service: stock locations and stock, shipments, shipping rates, allocation."""
