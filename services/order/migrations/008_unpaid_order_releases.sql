-- Orders placed with nothing paid nor authorised (a check, GetCandy's offline payment) and
-- when the system cancels them if they are still unpaid (UNPAID_ORDER_RELEASE_AFTER_S):
-- written with the order's completion, taken by one sweeper (FOR UPDATE SKIP LOCKED).
CREATE TABLE unpaid_order_releases (
    number      text        PRIMARY KEY,
    release_at  timestamptz NOT NULL
);
CREATE INDEX unpaid_order_releases_due ON unpaid_order_releases (release_at);
