-- SCD type 2 history of customers, from the snap_customers snapshot.
with snapshot as (

    select * from {{ ref('snap_customers') }}

)

select
    dbt_scd_id as customer_version_id,
    customer_id,
    first_name,
    last_name,
    lower(trim(email)) as email,
    upper(trim(country_code)) as country_code,
    updated_at,
    dbt_valid_from as valid_from,
    dbt_valid_to as valid_to,
    dbt_valid_to is null as is_current

from snapshot
