-- Order history aggregated per customer.
with orders as (

    select * from {{ ref('int_orders_enriched') }}

)

select
    customer_id,
    min(ordered_at) as first_order_at,
    max(ordered_at) as most_recent_order_at,
    count(case when order_status != 'cancelled' then order_id end) as number_of_orders,
    cast(sum(case when counts_as_revenue then order_total else 0 end) as decimal(18, 2)) as lifetime_value

from orders
group by customer_id
