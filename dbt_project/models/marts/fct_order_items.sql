with order_items as (

    select * from {{ ref('int_order_items_enriched') }}

),

orders as (

    select * from {{ ref('int_orders_enriched') }}

)

select
    order_items.order_item_id,
    order_items.order_id,
    orders.customer_id,
    order_items.product_id,
    orders.ordered_at,
    orders.order_date,
    orders.order_status,
    orders.counts_as_revenue,
    order_items.product_category,
    order_items.quantity,
    order_items.unit_price,
    order_items.line_amount

from order_items
inner join orders
    on order_items.order_id = orders.order_id
