"""The payment service: payment methods, payments and the payment gateway."""
