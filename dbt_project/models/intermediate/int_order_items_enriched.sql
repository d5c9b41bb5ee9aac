-- Order lines with their product attributes and line amount.
with order_items as (

    select * from {{ ref('stg_order_items') }}

),

products as (

    select * from {{ ref('stg_products') }}

)

select
    order_items.order_item_id,
    order_items.order_id,
    order_items.product_id,
    products.product_name,
    products.product_category,
    order_items.quantity,
    order_items.unit_price,
    cast(order_items.quantity * order_items.unit_price as decimal(18, 2)) as line_amount,
    order_items._loaded_at

from order_items
left join products
    on order_items.product_id = products.product_id
