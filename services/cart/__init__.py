"""The cart service: catalog prices, line items and coupons of each order."""
