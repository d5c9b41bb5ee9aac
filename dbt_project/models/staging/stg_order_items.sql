with source as (

    select * from {{ source('raw', 'order_items') }}

),

renamed as (

    select
        order_item_id,
        order_id,
        product_id,
        quantity,
        cast(unit_price_cents / 100.0 as decimal(18, 2)) as unit_price,
        _loaded_at

    from source

)

select * from renamed
