with products as (

    select * from {{ ref('stg_products') }}

),

sales as (

    select
        product_id,
        sum(quantity) as units_sold,
        sum(line_amount) as gross_sales
    from {{ ref('fct_order_items') }}
    where counts_as_revenue
    group by product_id

)

select
    products.product_id,
    products.sku,
    products.product_name,
    products.product_category,
    products.unit_price,
    products.is_active,
    coalesce(sales.units_sold, 0) as units_sold,
    cast(coalesce(sales.gross_sales, 0) as decimal(18, 2)) as gross_sales

from products
left join sales
    on products.product_id = sales.product_id
