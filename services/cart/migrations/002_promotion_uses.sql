-- One row per completed order that used a promotion (fed by order.events): usage limits.
CREATE TABLE promotion_uses (
    promotion_id  integer NOT NULL REFERENCES promotions (id),
    order_number  text    NOT NULL,
    PRIMARY KEY (promotion_id, order_number)
);
