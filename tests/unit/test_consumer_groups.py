"""A service's subscriptions to the same topics at the same pace share one Kafka consumer
group, and the operator's list of groups (`tillstream projections status`) is the one the
services run."""
from shared.service import ServiceDefinition, Subscription, consumer_groups
from tillstream.operations import CONSUMER_GROUPS


async def _ignore(conn, envelope) -> None:
    return None


def test_subscriptions_to_the_same_topics_share_a_group_and_others_keep_their_own():
    definition = ServiceDefinition(name="svc", interface=object, operations=lambda ctx: None, subscriptions=[
        Subscription(name="a", topics=["x.events", "y.events"], handler=_ignore),
        Subscription(name="b", topics=["z.events"], handler=_ignore),
        Subscription(name="c", topics=["y.events", "x.events"], handler=_ignore),
        Subscription(name="d", topics=["x.events", "y.events"], handler=_ignore, background=True),
    ])
    groups = consumer_groups(definition)
    assert {name: [s.name for s in subs] for name, subs in groups.items()} == {
        "svc.a+c": ["a", "c"], "svc.b": ["b"], "svc.d": ["d"]}


def test_the_operators_list_of_groups_is_the_one_the_services_run():
    from services.cart.app import definition as cart
    from services.order.app import definition as order
    from services.payment.app import definition as payment
    from services.shipping.app import definition as shipping

    running = {group: sorted(subscriptions[0].topics)
               for definition in (cart, order, payment, shipping)
               for group, subscriptions in consumer_groups(definition).items()}
    assert running == {group: sorted(topics) for group, topics in CONSUMER_GROUPS.items()}
