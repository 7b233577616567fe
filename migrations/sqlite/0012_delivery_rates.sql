-- Deliveries per second (see the PostgreSQL migration of the same name).
create table delivery_rates (
    processor_id    text primary key,
    paid_until      integer not null
);
