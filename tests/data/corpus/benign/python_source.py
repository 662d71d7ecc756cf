import os
import getpass
from openai import OpenAI

API_KEY = os.environ["OPENAI_API_KEY"]
password = getpass.getpass("Password: ")
client = OpenAI(api_key=API_KEY)
settings = {"api_key": os.getenv("SERVICE_API_KEY"), "password": None, "token_url": "https://auth.example.com/oauth/token"}

def connect(user: str, password: str) -> None:
    """Connect with the given password; the secret is read from the vault."""
    secret = vault.read("kv/data/app")["data"]["secret"]
    db_url = f"postgres://{user}:{password}@db:5432/app"
    return create_engine(db_url, pool_size=5)

class Config:
    api_key: str = "YOUR_API_KEY"
    secret_key = settings.SECRET_KEY
    access_token: Optional[str] = None
def handler_0(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '216d8897-7e5a-577a-8676-535a1c9f6ddb'})}

def handler_1(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '1fa1c8f3-50dd-b6cf-48ac-c84c871bf894'})}

def handler_2(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '11cdd581-71e2-0980-df45-15b4ac3c6655'})}

def handler_3(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'bc644bba-adda-cfad-e6e7-c3f9d1dd08a2'})}

def handler_4(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'f028ad4f-d478-354e-42a6-0c07423999bf'})}

def handler_5(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '0a0feb19-3c39-1073-8895-52660793d729'})}

def handler_6(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '1d8aee5b-f396-34a0-7bb5-c24e074229b9'})}

def handler_7(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'dfe91ab6-d762-48aa-3f53-634a8917a4f0'})}

def handler_8(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '3b8ff58c-176a-fe44-99a1-72f5fd74ae2e'})}

def handler_9(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '6073225b-054d-0574-6e9d-0e6ae66779d2'})}

def handler_10(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '821045db-cb0d-6d81-9ece-5e68b3734e10'})}

def handler_11(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'c9328831-e3de-0042-f250-9eb2627f1a53'})}

def handler_12(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'ba57ce15-7f61-b69c-5ebe-b064c44776e0'})}

def handler_13(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '9a6e110c-28c5-f6e3-7646-037b47eb60de'})}

def handler_14(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'fa6758f2-8a99-4924-697c-3b9d13806e47'})}

def handler_15(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '719b1310-3007-a880-3feb-f96b865b8b11'})}

def handler_16(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'c514db78-1452-80aa-2997-b31987cb8329'})}

def handler_17(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '0589503f-ab4b-555d-5092-df864d4c5043'})}

def handler_18(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '80546fb4-85e0-62eb-a142-47f726bb4aae'})}

def handler_19(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '0814fe88-e1cd-c971-14ed-14ac223e2d20'})}

def handler_20(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'ffb18cd4-ee71-4cac-20ec-b631361d9fe2'})}

def handler_21(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '33b2fc97-f6f8-e725-e797-3327eb127cfa'})}

def handler_22(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '5a6d7a7c-ae7c-8a0b-dd34-c88f48448af6'})}

def handler_23(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'a3a4f886-f8d8-539e-e973-abf811e7b942'})}

def handler_24(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '038c5562-0976-1f0c-0683-1cefb13608d5'})}

def handler_25(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'a2132a5d-1b05-bd9d-6631-8c27236ea505'})}

def handler_26(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '789d3801-efec-ad99-fabc-dd2e5908d8c2'})}

def handler_27(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '0221fef6-537b-4192-72f9-d14cc9ff40b8'})}

def handler_28(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': 'b1afa9fc-02b4-727d-29ae-ff39cf3f2bd3'})}

def handler_29(event, context):
    return {'statusCode': 200, 'body': json.dumps({'id': '8477a9be-63aa-95d4-d3ee-a3da8b7b56b6'})}
