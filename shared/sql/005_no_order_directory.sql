-- The order directory (002) recorded every order each service heard of; nothing decided
-- anything with it, and it cost every order three consumer transactions.
DROP TABLE IF EXISTS order_directory;
