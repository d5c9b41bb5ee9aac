-- Successful payments per order, one column per payment method.
{%- set payment_methods = ['credit_card', 'bank_transfer', 'gift_card', 'coupon'] %}

with payments as (

    select * from {{ ref('stg_payments') }}
    where payment_status = 'success'

)

select
    order_id,
    {%- for method in payment_methods %}
    cast(sum(case when payment_method = '{{ method }}' then amount else 0 end) as decimal(18, 2)) as {{ method }}_amount,
    {%- endfor %}
    cast(sum(amount) as decimal(18, 2)) as total_paid,
    count(*) as payment_count,
    max(_loaded_at) as _loaded_at

from payments
group by order_id
