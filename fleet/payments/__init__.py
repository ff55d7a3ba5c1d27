"""PIX gateways behind one interface (``fleet.payments.base``): sandbox, mercadopago, pushinpay."""
