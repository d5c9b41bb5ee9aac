with customers as (

    select * from {{ ref('stg_customers') }}

),

countries as (

    select * from {{ ref('country_codes') }}

),

customer_orders as (

    select * from {{ ref('int_customer_orders') }}

)

select
    customers.customer_id,
    customers.full_name,
    customers.first_name,
    customers.last_name,
    customers.email,
    customers.phone,
    customers.country_code,
    countries.country_name,
    countries.region,
    customers.created_at,
    customer_orders.first_order_at,
    customer_orders.most_recent_order_at,
    coalesce(customer_orders.number_of_orders, 0) as number_of_orders,
    cast(coalesce(customer_orders.lifetime_value, 0) as decimal(18, 2)) as lifetime_value,
    case
        when coalesce(customer_orders.number_of_orders, 0) = 0 then 'prospect'
        when customer_orders.number_of_orders = 1 then 'new'
        else 'returning'
    end as customer_type

from customers
left join countries
    on customers.country_code = countries.country_code
left join customer_orders
    on customers.customer_id = customer_orders.customer_id
