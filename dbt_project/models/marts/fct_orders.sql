-- Incremental: each run only (re)processes orders whose data landed after the newest
-- _loaded_at already in the table; unique_key replaces changed orders.
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy=('merge' if target.type == 'databricks' else 'delete+insert'),
        on_schema_change='append_new_columns',
    )
}}

with orders as (

    select * from {{ ref('int_orders_enriched') }}

    {% if is_incremental() %}
    where _loaded_at > (select max(_loaded_at) from {{ this }})
    {% endif %}

)

select
    order_id,
    customer_id,
    ordered_at,
    order_date,
    order_status,
    is_completed,
    is_returned,
    counts_as_revenue,
    item_count,
    unit_count,
    order_total,
    amount_paid,
    voucher_amount,
    cast(order_total - voucher_amount as decimal(18, 2)) as net_order_total,
    _loaded_at

from orders
