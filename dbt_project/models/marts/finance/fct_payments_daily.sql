-- Successful payments per order date and payment method (custom schema: <target schema>_finance).
with payments as (

    select * from {{ ref('stg_payments') }}
    where payment_status = 'success'

),

orders as (

    select order_id, order_date from {{ ref('fct_orders') }}

)

select
    orders.order_date,
    payments.payment_method,
    count(*) as payment_count,
    cast(sum(payments.amount) as decimal(18, 2)) as amount

from payments
inner join orders
    on payments.order_id = orders.order_id
group by orders.order_date, payments.payment_method
