with source as (

    select * from {{ source('raw', 'customers') }}

),

renamed as (

    select
        customer_id,
        first_name,
        last_name,
        first_name || ' ' || last_name as full_name,
        lower(trim(email)) as email,
        phone,
        upper(trim(country_code)) as country_code,
        created_at,
        updated_at,
        _loaded_at

    from source

)

select * from renamed
