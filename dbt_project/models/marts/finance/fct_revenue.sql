-- Daily revenue (custom schema: <target schema>_finance).
with orders as (

    select * from {{ ref('fct_orders') }}
    where order_status != 'cancelled'

)

select
    order_date,
    count(*) as order_count,
    cast(sum(order_total) as decimal(18, 2)) as gross_revenue,
    cast(sum(case when is_returned then order_total else 0 end) as decimal(18, 2)) as returned_revenue,
    cast(sum(case when counts_as_revenue then order_total else 0 end) as decimal(18, 2)) as net_revenue,
    cast(sum(voucher_amount) as decimal(18, 2)) as voucher_amount

from orders
group by order_date
