with source as (

    select * from {{ source('raw', 'orders') }}
    {{ limit_in_dev('ordered_at') }}

),

renamed as (

    select
        order_id,
        customer_id,
        ordered_at,
        cast(ordered_at as date) as order_date,
        lower(trim(status)) as raw_status,
        _loaded_at

    from source

)

select * from renamed
