-- The event (of another service) whose handling cleared `pending_request`: a reader
-- waiting for the request to settle also waits until the view has applied that event.
ALTER TABLE order_view ADD COLUMN settled_by uuid;
