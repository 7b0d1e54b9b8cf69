-- Line item id → cart, for dialects that address lines by id alone (GetCandy's basket-lines).
CREATE INDEX events_line_item_id ON events (((payload->>'line_item_id')::int)) WHERE type = 'cart.LineItemAdded';
