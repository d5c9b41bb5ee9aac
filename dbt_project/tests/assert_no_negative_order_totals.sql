-- Singular test: an order can never be worth or pay less than nothing.
-- Returns the offending orders; dbt fails the test if any row comes back.
select
    order_id,
    order_total,
    amount_paid,
    net_order_total
from {{ ref('fct_orders') }}
where order_total < 0
   or amount_paid < 0
   or net_order_total < 0
