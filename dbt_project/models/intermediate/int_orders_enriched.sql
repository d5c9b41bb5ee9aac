-- Orders with normalised status (seed order_status_mapping), item totals and payments.
-- _loaded_at is the latest landing time of the order or any of its lines/payments,
-- so the incremental fct_orders also picks up late-arriving lines and payments.
with orders as (

    select * from {{ ref('stg_orders') }}

),

status_mapping as (

    select * from {{ ref('order_status_mapping') }}

),

order_items as (

    select
        order_id,
        count(*) as item_count,
        sum(quantity) as unit_count,
        sum(line_amount) as order_total,
        max(_loaded_at) as _loaded_at
    from {{ ref('int_order_items_enriched') }}
    group by order_id

),

payments as (

    select * from {{ ref('int_order_payments_pivoted') }}

)

select
    orders.order_id,
    orders.customer_id,
    orders.ordered_at,
    orders.order_date,
    orders.raw_status,
    coalesce(status_mapping.order_status, 'unknown') as order_status,
    coalesce(status_mapping.is_completed, false) as is_completed,
    coalesce(status_mapping.is_returned, false) as is_returned,
    coalesce(status_mapping.counts_as_revenue, false) as counts_as_revenue,
    coalesce(order_items.item_count, 0) as item_count,
    coalesce(order_items.unit_count, 0) as unit_count,
    cast(coalesce(order_items.order_total, 0) as decimal(18, 2)) as order_total,
    cast(coalesce(payments.total_paid, 0) as decimal(18, 2)) as amount_paid,
    cast(coalesce(payments.gift_card_amount, 0) + coalesce(payments.coupon_amount, 0) as decimal(18, 2)) as voucher_amount,
    greatest(
        orders._loaded_at,
        coalesce(order_items._loaded_at, orders._loaded_at),
        coalesce(payments._loaded_at, orders._loaded_at)
    ) as _loaded_at

from orders
left join status_mapping
    on orders.raw_status = status_mapping.raw_status
left join order_items
    on orders.order_id = order_items.order_id
left join payments
    on orders.order_id = payments.order_id
