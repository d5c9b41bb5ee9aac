-- PII-safe view of dim_customers for broad BI access. On Databricks only members of
-- the `pii_readers` account group see e-mail/phone/name; locally the values pass through.
{{ config(materialized='view') }}

select
    customer_id,
    {{ mask_pii('full_name') }} as full_name,
    {{ mask_pii('email') }} as email,
    {{ mask_pii('phone') }} as phone,
    country_code,
    country_name,
    region,
    created_at,
    first_order_at,
    most_recent_order_at,
    number_of_orders,
    lifetime_value,
    customer_type

from {{ ref('dim_customers') }}
